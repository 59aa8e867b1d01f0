import path from 'node:path'
import { z } from 'zod'
import { BACKUP_ID, BACKUP_TYPES, backupRecordSchema, type BackupRecord } from '../db/backup-index.ts'
import { OffsiteError } from '../core/errors.ts'
import { hmacHex, MAC_SCHEME, sidecarMacInput } from './mac.ts'

// The sidecar `<key>.json` is what makes the bucket self-describing: a new droplet with an empty
// BACKUP_DIR lists the prefix, reads these, and knows every backup's id, age, tables and rows,
// which key decrypts it, and the checksums to prove both the download and the decryption.
// The ciphertext's sha256 cannot be object metadata: S3 fixes metadata when the upload starts,
// and the ciphertext exists only once the last byte is sent.
export const SIDECAR_FORMAT = 'toogoodtogo-offsite-backup/1'

const sha256 = z.string().regex(/^[0-9a-f]{64}$/)
const timestamp = z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z$/)
const bytes = z.number().int().nonnegative()

export const sidecarSchema = z.object({
  format: z.literal(SIDECAR_FORMAT),
  key: z.string().min(1),
  uploaded_at: timestamp,
  backup_id: z.string().regex(BACKUP_ID),
  created_at: timestamp,
  backup_type: z.enum(BACKUP_TYPES),
  database_name: z.string(),
  row_counts: z.record(z.string(), z.number().int().nonnegative()),
  file_name: z.string().min(1),
  plaintext: z.object({ size: bytes, sha256 }),
  ciphertext: z.object({ size: bytes, sha256 }),
  encryption: z.object({ scheme: z.literal('age'), recipient: z.string().startsWith('age1') }),
  /** the index record as it was when uploaded, so a new droplet can index the download in full */
  record: z.record(z.string(), z.unknown()),
  /** absent on copies made before they were authenticated (lib/offsite/mac.ts) */
  authentication: z
    .object({
      scheme: z.literal(MAC_SCHEME),
      /** HMAC of the object's bytes */
      ciphertext_mac: sha256,
      /** HMAC of this sidecar with this field left out (sidecarMacInput) */
      sidecar_mac: sha256,
    })
    .optional(),
})

export type Sidecar = z.infer<typeof sidecarSchema>

export interface Measured {
  size: number
  sha256: string
  /** HMAC of the bytes, when they were measured with a MAC key */
  mac?: string
}

export function buildSidecar(input: {
  key: string
  uploadedAt: string
  record: BackupRecord
  localFile: string
  plaintext: Measured
  ciphertext: Measured
  recipient: string
  /** the MAC key (null: this droplet holds only the public key, and the copy is not authenticated) */
  macKey?: Buffer | null
}): Sidecar {
  const { record } = input
  // The local path means nothing on another machine; the download names its own. Whether and where
  // it was copied off-site is this droplet's bookkeeping: the sidecar itself is that record.
  const { file_path: _path, offsite: _copy, offsite_error: _failure, ...portable } = record
  const sidecar: Sidecar = {
    format: SIDECAR_FORMAT,
    key: input.key,
    uploaded_at: input.uploadedAt,
    backup_id: record.backup_id,
    created_at: record.created_at,
    backup_type: record.backup_type,
    database_name: record.database_name,
    row_counts: record.row_counts,
    file_name: path.basename(input.localFile),
    plaintext: { size: input.plaintext.size, sha256: input.plaintext.sha256 },
    ciphertext: { size: input.ciphertext.size, sha256: input.ciphertext.sha256 },
    encryption: { scheme: 'age', recipient: input.recipient },
    record: portable,
  }
  const { macKey, ciphertext } = input
  if (!macKey || !ciphertext.mac) return sidecar
  const covered = { scheme: MAC_SCHEME, ciphertext_mac: ciphertext.mac } as const
  // through JSON and back, as the reader will see it (JSON.parse orders integer-like keys first)
  const sidecarMac = hmacHex(macKey, sidecarMacInput(JSON.parse(JSON.stringify({ ...sidecar, authentication: covered }))))
  return { ...sidecar, authentication: { ...covered, sidecar_mac: sidecarMac } }
}

// What each parsed sidecar's MAC covers, as it was read: the parsed object drops unknown fields.
const signed = new WeakMap<Sidecar, string>()

export function signedContentOf(sidecar: Sidecar): string {
  return signed.get(sidecar) ?? sidecarMacInput(JSON.parse(JSON.stringify(sidecar)))
}

/** A sidecar read back from the bucket; anything else is named, not trusted. */
export function parseSidecar(key: string, text: string): Sidecar {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new OffsiteError('verify', `Sidecar ${key} is not valid JSON`)
  }
  const parsed = sidecarSchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    throw new OffsiteError('verify', `Sidecar ${key} is invalid at ${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`)
  }
  signed.set(parsed.data, sidecarMacInput(json))
  return parsed.data
}

/** The index record for a downloaded copy, as the droplet that made it recorded it. */
export function localRecordFrom(sidecar: Sidecar, filePath: string): BackupRecord {
  const parsed = backupRecordSchema.safeParse({ ...sidecar.record, file_path: filePath })
  if (!parsed.success || parsed.data.backup_id !== sidecar.backup_id || parsed.data.sha256 !== sidecar.plaintext.sha256) {
    throw new OffsiteError('verify', `Sidecar ${sidecar.key} does not hold a usable index record for ${sidecar.backup_id}`)
  }
  return parsed.data
}
