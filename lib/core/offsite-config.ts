import path from 'node:path'
import { z } from 'zod'
import { addSecretsFrom } from './redact.ts'
import { OffsiteError } from './errors.ts'

// The off-site settings from .env.production / the environment: configuration (Config.offsite), so
// here beside config.ts; what is done with them is lib/offsite. Off-site is off (null) while
// OFFSITE_S3_BUCKET is empty, so a droplet without a bucket works exactly as before.
export interface OffsiteSettings {
  endpoint: string
  region: string
  bucket: string
  /** '' or ends with '/': keys are `${prefix}${backup_id}.sql.gz.age` */
  prefix: string
  accessKeyId: string
  secretAccessKey: string
  /** the age public key every copy is encrypted to */
  recipient: string
  /** the age private key, needed only to download; null on a droplet that only uploads */
  identityFile: string | null
  retention: { count: number; days: number }
}

// Named so an error can say which variable is wrong without ever printing its value.
const SECRET_VARIABLES = new Set(['OFFSITE_S3_ACCESS_KEY_ID', 'OFFSITE_S3_SECRET_ACCESS_KEY'])

const MUST_BE_SET = 'must be set when OFFSITE_S3_BUCKET is set'
const required = z.string({ error: MUST_BE_SET }).trim().min(1, MUST_BE_SET)

const schema = z.object({
  OFFSITE_S3_ENDPOINT: required.pipe(z.url({ protocol: /^https?$/, error: 'must be an http(s) URL such as https://fra1.digitaloceanspaces.com' })),
  OFFSITE_S3_REGION: z.string().trim().min(1).default('us-east-1'),
  // The S3 rules for a bucket name; a typo is caught here rather than as NoSuchBucket at 3 a.m.
  OFFSITE_S3_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, '3-63 lowercase letters, digits, dots and hyphens'),
  OFFSITE_S3_PREFIX: z
    .string()
    .regex(/^(?:[A-Za-z0-9._-]+\/)*[A-Za-z0-9._-]*$/, 'letters, digits, . _ - and / (no leading /)')
    .transform((p) => (p === '' || p.endsWith('/') ? p : `${p}/`))
    .default('toogoodtogo/'),
  OFFSITE_S3_ACCESS_KEY_ID: required,
  OFFSITE_S3_SECRET_ACCESS_KEY: required,
  // age checks the bech32 checksum too: a public key with one character mistyped is refused now,
  // not after every backup has been encrypted to a key nobody holds.
  BACKUP_AGE_RECIPIENT: required.refine(isAgeRecipient, 'must be an age public key (age1..., from `age-keygen -y`)'),
  BACKUP_AGE_IDENTITY_FILE: z
    .string()
    .refine((p) => path.isAbsolute(p), 'must be an absolute path')
    .optional(),
  OFFSITE_RETENTION_COUNT: z.coerce.number().int().min(1).default(14),
  OFFSITE_RETENTION_DAYS: z.coerce.number().int().min(1).default(30),
})

export const OFFSITE_VARIABLES = Object.keys(schema.shape) as (keyof typeof schema.shape)[]

export function offsiteSettings(vars: Record<string, string | undefined>): OffsiteSettings | null {
  const picked: Record<string, string> = {}
  for (const name of OFFSITE_VARIABLES) {
    const value = vars[name]
    if (value !== undefined && value !== '') picked[name] = value
  }
  if (!picked.OFFSITE_S3_BUCKET) return null
  addSecretsFrom(picked)
  const parsed = schema.safeParse(picked)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]
    const name = String(issue?.path[0] ?? 'OFFSITE_S3_BUCKET')
    const shown = SECRET_VARIABLES.has(name) || picked[name] === undefined ? '' : `=${JSON.stringify(picked[name])}`
    throw new OffsiteError('config', `Invalid ${name}${shown}: ${issue?.message ?? 'invalid'}`, { variable: name })
  }
  const s = parsed.data
  return {
    endpoint: s.OFFSITE_S3_ENDPOINT,
    region: s.OFFSITE_S3_REGION,
    bucket: s.OFFSITE_S3_BUCKET,
    prefix: s.OFFSITE_S3_PREFIX,
    accessKeyId: s.OFFSITE_S3_ACCESS_KEY_ID,
    secretAccessKey: s.OFFSITE_S3_SECRET_ACCESS_KEY,
    recipient: s.BACKUP_AGE_RECIPIENT,
    identityFile: s.BACKUP_AGE_IDENTITY_FILE ?? null,
    retention: { count: s.OFFSITE_RETENTION_COUNT, days: s.OFFSITE_RETENTION_DAYS },
  }
}

// X25519 keys only: Debian 12's age (1.1) cannot encrypt to the newer post-quantum ones. The key is
// bech32 (BIP 173), whose checksum catches any single mistyped character: checked here in a few
// lines rather than by loading age-encryption into every backup run.
const BECH32 = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l'
const GENERATORS = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3]

export function isAgeRecipient(value: string): boolean {
  if (!/^age1[02-9ac-hj-np-z]{58}$/.test(value)) return false
  const hrp = [...'age']
  const values = [...hrp.map((c) => c.charCodeAt(0) >> 5), 0, ...hrp.map((c) => c.charCodeAt(0) & 31), ...[...value.slice(4)].map((c) => BECH32.indexOf(c))]
  let checksum = 1
  for (const v of values) {
    const top = checksum >>> 25
    checksum = ((checksum & 0x1ffffff) << 5) ^ v
    GENERATORS.forEach((g, i) => {
      if ((top >>> i) & 1) checksum ^= g
    })
  }
  return checksum === 1
}
