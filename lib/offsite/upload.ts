import { randomBytes } from 'node:crypto'
import type { S3Client } from '@aws-sdk/client-s3'
import type { BackupRecord } from '../db/backup-index.ts'
import { messageOf, OffsiteError } from '../core/errors.ts'
import { isoSeconds } from '../core/format.ts'
import { log } from '../core/log.ts'
import { isDryRun } from '../core/shell.ts'
import { CommandFailed, describeStages, runStages, type Stage } from '../core/runner.ts'
import { ageEncryptCommand } from '../commands/age.ts'
import { deleteObject, headObject, readSidecar, writeSidecar, type Bucket } from './bucket.ts'
import { dataKey, sidecarKey } from './keys.ts'
import { measureFile, Meter } from './meter.ts'
import { MultipartUpload } from './multipart.ts'
import { createS3Client, isTransient, offsiteFailure } from './s3.ts'
import type { OffsiteSettings } from '../core/offsite-config.ts'
import { macKeyFor, sidecarAuthenticity } from './mac.ts'
import { buildSidecar, signedContentOf } from './sidecar.ts'

/** What the index records as the backup's `offsite` field: the object and its ciphertext. */
export interface OffsiteCopy {
  key: string
  uploaded_at: string
  /** bytes of the encrypted object */
  size: number
  /** sha256 of the encrypted object, as sent and as the sidecar records it */
  sha256: string
}

export interface TransferOptions {
  client?: S3Client
  /** the whole transfer; the S3 client's own timeouts catch a stalled connection long before */
  timeoutMs?: number
}

// 8 MiB parts, two in flight: three 8 MiB buffers whatever the size, and 10,000 parts (S3's
// limit) still allow 80 GB.
export const PART_SIZE = 8 * 1024 * 1024
const QUEUE_SIZE = 2
const DEFAULT_TIMEOUT_MS = 6 * 3600_000

/**
 * Copies a verified local backup off-site: `age --encrypt` reads the file, its output goes through
 * sha256 and a byte count into a multipart upload; nothing is written to disk. The object is then
 * checked on the server, and only then is its sidecar written: a copy without a sidecar is never
 * listed as good. Under --dry-run it prints the plan and returns a placeholder, not to be recorded.
 */
export async function uploadBackup(settings: OffsiteSettings, localFile: string, record: BackupRecord, options: TransferOptions = {}): Promise<OffsiteCopy> {
  const key = dataKey(settings.prefix, record.backup_id)
  const metaKey = sidecarKey(key)
  const encrypt = ageEncryptCommand(settings.recipient, localFile)
  if (isDryRun()) {
    process.stdout.write(`[dry-run] ${describeStages([encrypt])} | upload to ${settings.bucket}/${key}, then ${metaKey}\n`)
    return { key, uploaded_at: isoSeconds(new Date()), size: 0, sha256: '0'.repeat(64) }
  }
  const bucket: Bucket = { client: options.client ?? createS3Client(settings), settings }
  const macKey = await macKeyFor(settings.identityFile, settings.recipient)
  if (!macKey) {
    log.warn(`BACKUP_AGE_IDENTITY_FILE does not hold the identity of ${settings.recipient} on this droplet: the copy of ${record.backup_id} cannot be authenticated, and restore latest and the drill will pass over it (README, off-site copies)`)
  }

  // An earlier run may have copied this backup already (the index lost its `offsite` field, or a
  // new droplet syncs again): the same bytes for the same key are kept, not sent twice. Anything
  // else under this id loses its sidecar first, so no sidecar ever describes an object being replaced.
  const existing = await readSidecar(bucket, metaKey)
  if (existing) {
    // A copy without this droplet's MAC (an older one) is sent again, authenticated this time.
    const authentic = macKey ? sidecarAuthenticity(existing, signedContentOf(existing), macKey).authentic : !existing.authentication
    if (authentic && existing.plaintext.sha256 === record.sha256 && existing.encryption.recipient === settings.recipient) {
      const head = await headObject(bucket, key)
      if (head?.size === existing.ciphertext.size) {
        log.info(`Off-site copy of ${record.backup_id} is already in the bucket (${key}); not sent again`)
        return { key, uploaded_at: existing.uploaded_at, size: existing.ciphertext.size, sha256: existing.ciphertext.sha256 }
      }
    }
    await deleteObject(bucket, metaKey)
  }

  const token = randomBytes(16).toString('hex')
  // The file must still be the one the index describes. It is hashed beside the encryption (a second
  // read, from the page cache), and the ciphertext cannot end, so the upload cannot complete,
  // until it has been found to be.
  const plaintext = measureFile(localFile)
  // awaited only at the end of the ciphertext: a read error must not count as unhandled before then
  plaintext.catch(() => undefined)
  const cipher = new Meter({
    macKey,
    beforeEnd: async () => {
      const actual = await plaintext
      if (actual.size === record.file_size_bytes && actual.sha256 === record.sha256) return null
      return new OffsiteError('local', `${localFile} is no longer the file the index describes (${actual.size} bytes, sha256 ${actual.sha256.slice(0, 12)}…; recorded ${record.file_size_bytes} bytes, ${record.sha256.slice(0, 12)}…): not copied off-site`)
    },
  })
  const upload = new MultipartUpload(
    {
      client: bucket.client,
      bucket: settings.bucket,
      key,
      contentType: 'application/octet-stream',
      // Fixed when the upload starts, so only what is known then: enough to tell, on the server,
      // that the object there is the one this run sent and which backup it holds.
      metadata: { 'backup-id': record.backup_id, 'plaintext-sha256': record.sha256, 'age-recipient': settings.recipient, 'upload-token': token },
    },
    { partSize: PART_SIZE, queueSize: QUEUE_SIZE, isTransient },
  )
  const sending = upload.send(cipher)
  const stages: Stage[] = [encrypt, cipher]
  const [flow, sent] = await Promise.allSettled([runStages(stages, options.timeoutMs ?? DEFAULT_TIMEOUT_MS), sending])

  // Each failure breaks the other side too; report the first cause, not the broken pipe it left.
  // An upload that fails by itself stops reading (it destroys the ciphertext stream without an
  // error); a pipeline that fails destroys that stream with its own error, which the upload rethrows.
  const uploadFailed = sent.status === 'rejected' ? sent.reason : null
  const flowFailed = flow.status === 'rejected' ? flow.reason : null
  const uploadFailedFirst = uploadFailed !== null && uploadFailed !== cipher.errored
  if (cipher.errored instanceof OffsiteError && !uploadFailedFirst) throw cipher.errored
  // The preflight read above reached the server: a network error now means it went away mid-upload.
  if (uploadFailedFirst) {
    const aftermath = upload.uploadId ? 'its parts could not be aborted and are left for retention to abort' : 'nothing was kept'
    throw offsiteFailure(uploadFailed, { action: `upload of ${key}`, settings, midTransfer: true, aftermath: `${aftermath}; no copy is recorded as good` })
  }
  if (flowFailed !== null || uploadFailed !== null) {
    // age that dies closes its output like an end: the upload may have completed, short. No
    // sidecar makes it a good copy, but it should not wait a day for retention either.
    if (uploadFailed === null) await deleteObject(bucket, key).catch(() => log.warn(`Could not remove the incomplete ${key}; retention removes it later`))
    throw encryptionFailure(flowFailed ?? uploadFailed, localFile)
  }

  const ciphertext = cipher.measured()
  await verifyOnServer(bucket, key, { size: ciphertext.size, token, plaintextSha256: record.sha256 })
  const uploadedAt = isoSeconds(new Date())
  const sidecar = buildSidecar({ key, uploadedAt, record, localFile, plaintext: await plaintext, ciphertext, recipient: settings.recipient, macKey })
  try {
    await writeSidecar(bucket, sidecar, metaKey)
  } catch (error) {
    await deleteObject(bucket, key).catch(() => log.warn(`Could not remove ${key} after its sidecar failed; retention removes it later`))
    throw error
  }
  return { key, uploaded_at: uploadedAt, size: ciphertext.size, sha256: ciphertext.sha256 }
}

/**
 * The server's view of what it stored: every byte counted here (the size), and our metadata (the
 * object is this run's, not an older one under the same key). Each part's content was already
 * checked by the server against the SigV4 payload hash it was signed with. ETags are not used:
 * their format differs between stores.
 */
async function verifyOnServer(bucket: Bucket, key: string, expected: { size: number; token: string; plaintextSha256: string }): Promise<void> {
  const head = await headObject(bucket, key)
  let problem: string | null = null
  if (!head) problem = 'the object is not there after the upload completed'
  else if (head.size !== expected.size) problem = `the server holds ${head.size} bytes, ${expected.size} were sent`
  else if (head.metadata['upload-token'] !== expected.token) problem = 'the object there is not the one this run sent (another upload replaced it)'
  else if (head.metadata['plaintext-sha256'] !== expected.plaintextSha256) problem = 'the object records the sha256 of another backup'
  if (!problem) return
  if (head) await deleteObject(bucket, key).catch((error) => log.warn(`Could not remove the unverified ${key}: ${messageOf(error)}`))
  throw new OffsiteError('verify', `Off-site upload of ${key} did not verify: ${problem}; no sidecar written, nothing recorded as a good copy`)
}

function encryptionFailure(reason: unknown, localFile: string): OffsiteError {
  if (reason instanceof OffsiteError) return reason
  if (reason instanceof CommandFailed) {
    const missing = / 127$|ENOENT/.test(reason.message) ? ' (is Debian\'s age package installed? apt-get install age)' : ''
    return new OffsiteError('local', `Encrypting ${localFile} failed: ${reason.message}${missing}`, { cause: reason })
  }
  return new OffsiteError('local', `Reading ${localFile} for the off-site copy failed: ${messageOf(reason)}`, { cause: reason })
}
