import { describe, expect, it } from 'vitest'
import { OffsiteError } from '../../lib/core/errors.ts'
import { Encrypter, generateX25519Identity, identityToRecipient } from 'age-encryption'
import { isAgeRecipient, offsiteSettings } from '../../lib/core/offsite-config.ts'

const RECIPIENT = 'age1eezeuwxtr03cevxr92894eta0ky4877y0d0595786s2ak5p5w5vqp077td'
const SECRET = 'Sup3r-Secret-Value-123'

const base = {
  OFFSITE_S3_ENDPOINT: 'https://fra1.digitaloceanspaces.com',
  OFFSITE_S3_REGION: 'fra1',
  OFFSITE_S3_BUCKET: 'ttg-backups',
  OFFSITE_S3_ACCESS_KEY_ID: 'DO00EXAMPLEKEYID',
  OFFSITE_S3_SECRET_ACCESS_KEY: SECRET,
  BACKUP_AGE_RECIPIENT: RECIPIENT,
}

function failure(vars: Record<string, string | undefined>): OffsiteError {
  try {
    offsiteSettings(vars)
  } catch (error) {
    if (error instanceof OffsiteError) return error
    throw error
  }
  throw new Error('expected offsiteSettings to throw')
}

describe('offsiteSettings', () => {
  it('is off (null) while OFFSITE_S3_BUCKET is empty or unset, whatever else is set', () => {
    expect(offsiteSettings({})).toBeNull()
    expect(offsiteSettings({ ...base, OFFSITE_S3_BUCKET: '' })).toBeNull()
    expect(offsiteSettings({ OFFSITE_S3_ENDPOINT: 'not a url' })).toBeNull()
  })

  it('applies the defaults: prefix toogoodtogo/, 14 copies, 30 days, no identity file', () => {
    expect(offsiteSettings(base)).toEqual({
      endpoint: 'https://fra1.digitaloceanspaces.com',
      region: 'fra1',
      bucket: 'ttg-backups',
      prefix: 'toogoodtogo/',
      accessKeyId: 'DO00EXAMPLEKEYID',
      secretAccessKey: SECRET,
      recipient: RECIPIENT,
      identityFile: null,
      retention: { count: 14, days: 30 },
    })
  })

  it('normalizes the prefix to end with / and reads the retention numbers', () => {
    const s = offsiteSettings({ ...base, OFFSITE_S3_PREFIX: 'prod/db', OFFSITE_RETENTION_COUNT: '3', OFFSITE_RETENTION_DAYS: '7', BACKUP_AGE_IDENTITY_FILE: '/etc/ttg/age.key' })
    expect(s).toMatchObject({ prefix: 'prod/db/', retention: { count: 3, days: 7 }, identityFile: '/etc/ttg/age.key' })
  })

  it('names a missing required variable', () => {
    const { OFFSITE_S3_ENDPOINT: _endpoint, ...rest } = base
    expect(failure(rest).message).toMatch(/^Invalid OFFSITE_S3_ENDPOINT: /)
    expect(failure({ ...base, BACKUP_AGE_RECIPIENT: '' }).message).toMatch(/^Invalid BACKUP_AGE_RECIPIENT: must be set/)
  })

  it('refuses a recipient with one character mistyped (the bech32 checksum), naming the variable', () => {
    const typo = RECIPIENT.slice(0, -1) + (RECIPIENT.endsWith('d') ? 'e' : 'd')
    const error = failure({ ...base, BACKUP_AGE_RECIPIENT: typo })
    expect(error.message).toMatch(/^Invalid BACKUP_AGE_RECIPIENT=.*age public key/)
    expect(error.variable).toBe('BACKUP_AGE_RECIPIENT')
    expect(error.kind).toBe('config')
    expect(failure({ ...base, BACKUP_AGE_RECIPIENT: 'AGE-SECRET-KEY-1QQQ' }).variable).toBe('BACKUP_AGE_RECIPIENT')
  })

  it('never prints the value of a secret in its error', () => {
    const error = failure({ ...base, OFFSITE_S3_SECRET_ACCESS_KEY: '   ' })
    expect(error.message).toBe('Invalid OFFSITE_S3_SECRET_ACCESS_KEY: must be set when OFFSITE_S3_BUCKET is set')
    const bad = failure({ ...base, OFFSITE_S3_BUCKET: 'Bad_Bucket', OFFSITE_S3_ENDPOINT: 'ftp://x' })
    expect(bad.message).not.toContain(SECRET)
  })

  it('rejects a malformed bucket, prefix, endpoint, identity path or retention number', () => {
    expect(failure({ ...base, OFFSITE_S3_BUCKET: 'Bad_Bucket' }).variable).toBe('OFFSITE_S3_BUCKET')
    expect(failure({ ...base, OFFSITE_S3_PREFIX: '/abs/' }).variable).toBe('OFFSITE_S3_PREFIX')
    expect(failure({ ...base, OFFSITE_S3_ENDPOINT: 'ftp://example.com' }).variable).toBe('OFFSITE_S3_ENDPOINT')
    expect(failure({ ...base, BACKUP_AGE_IDENTITY_FILE: 'age.key' }).variable).toBe('BACKUP_AGE_IDENTITY_FILE')
    expect(failure({ ...base, OFFSITE_RETENTION_COUNT: '0' }).variable).toBe('OFFSITE_RETENTION_COUNT')
  })
})

describe('isAgeRecipient', () => {
  it('agrees with age itself on real keys and on every single-character typo of them', async () => {
    const ageAccepts = (r: string) => {
      try {
        new Encrypter().addRecipient(r)
        return true
      } catch {
        return false
      }
    }
    for (let i = 0; i < 20; i++) {
      const recipient = await identityToRecipient(await generateX25519Identity())
      expect(isAgeRecipient(recipient)).toBe(true)
      const at = 4 + (i % 58)
      for (const c of 'qpzry9x8gf2tvdw0s3jn54khce6mua7l') {
        if (c === recipient[at]) continue
        const typo = recipient.slice(0, at) + c + recipient.slice(at + 1)
        expect(isAgeRecipient(typo)).toBe(ageAccepts(typo))
        expect(isAgeRecipient(typo)).toBe(false)
      }
    }
    expect(isAgeRecipient(RECIPIENT.toUpperCase())).toBe(false)
    expect(isAgeRecipient('age1' + 'q'.repeat(58))).toBe(false)
  })
})
