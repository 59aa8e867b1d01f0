import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { backupRecordSchema, foreignFileProblem, isFutureDated } from '../../lib/db/backup-index.ts'
import { hmacHex, macKeyFromIdentity, sidecarAuthenticity } from '../../lib/offsite/mac.ts'
import { buildSidecar, parseSidecar, signedContentOf } from '../../lib/offsite/sidecar.ts'

const IDENTITY = 'AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ'
const record = backupRecordSchema.parse({
  backup_id: 'shop_20261201_030000', created_at: '2026-12-01T03:00:00Z', backup_type: 'scheduled',
  file_path: '/opt/backups/postgres/shop_20261201_030000.sql.gz', file_size_mb: 1, file_size_bytes: 1234,
  database_name: 'shop', pg_dump_version: '15', compressed: true, sha256: 'a'.repeat(64),
  // an integer-like table name: JSON.parse puts it first, whatever order it was written in
  row_counts: { 'public.users': 2000, '42': 1 }, verified: true, verified_at: '2026-12-01T03:00:05Z',
  retention_until: '2026-12-08T03:00:00Z', artifact_id: null,
})

function signed(macKey: Buffer | null) {
  return buildSidecar({
    key: 'p/shop_20261201_030000.sql.gz.age', uploadedAt: '2026-12-01T03:01:00Z', record, localFile: record.file_path,
    plaintext: { size: 1234, sha256: 'a'.repeat(64) }, ciphertext: { size: 1300, sha256: 'b'.repeat(64), ...(macKey ? { mac: hmacHex(macKey, 'cipher') } : {}) },
    recipient: 'age1' + 'q'.repeat(58), macKey,
  })
}

describe('sidecar authentication', () => {
  const key = macKeyFromIdentity(IDENTITY)

  it('derives one key per identity, the same on every droplet', () => {
    expect(macKeyFromIdentity(IDENTITY).equals(key)).toBe(true)
    expect(macKeyFromIdentity(IDENTITY.replace(/Q$/, 'P')).equals(key)).toBe(false)
    expect(key.length).toBe(32)
  })

  it('a sidecar read back verifies; any field changed, or another key, does not', () => {
    const text = JSON.stringify(signed(key), null, 2)
    const read = parseSidecar('k', text)
    expect(sidecarAuthenticity(read, signedContentOf(read), key)).toEqual({ authentic: true })
    const other = macKeyFromIdentity(IDENTITY.replace(/Q$/, 'P'))
    expect(sidecarAuthenticity(read, signedContentOf(read), other)).toMatchObject({ authentic: false, legacy: false })
    for (const change of [{ created_at: '2027-01-01T00:00:00Z' }, { ciphertext: { size: 1300, sha256: 'c'.repeat(64) } }, { extra: 1 }]) {
      const altered = parseSidecar('k', JSON.stringify({ ...JSON.parse(text), ...change }))
      expect(sidecarAuthenticity(altered, signedContentOf(altered), key)).toMatchObject({ authentic: false, legacy: false })
    }
  })

  it('a sidecar without a MAC is told apart as unauthenticated (older, or made with the public key only)', () => {
    const read = parseSidecar('k', JSON.stringify(signed(null)))
    expect(read.authentication).toBeUndefined()
    expect(sidecarAuthenticity(read, signedContentOf(read), key)).toMatchObject({ authentic: false, legacy: true })
  })
})

describe('the index is checked, not trusted', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-trust-unit-'))
  const backups = path.join(dir, 'backups')
  fs.mkdirSync(backups)
  const linkedDir = path.join(dir, 'linked-backups')
  fs.symlinkSync(backups, linkedDir)
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))
  const id = 'shop_20261201_030000'

  it('accepts only <BACKUP_DIR>/<id>.sql.gz, through a linked BACKUP_DIR too', () => {
    expect(foreignFileProblem(backups, { backup_id: id, file_path: path.join(backups, `${id}.sql.gz`) })).toBeNull()
    expect(foreignFileProblem(linkedDir, { backup_id: id, file_path: path.join(backups, `${id}.sql.gz`) })).toBeNull()
    expect(foreignFileProblem(backups, { backup_id: id, file_path: '/etc/passwd' })).toMatch(/is not shop_20261201_030000\.sql\.gz/)
    expect(foreignFileProblem(backups, { backup_id: id, file_path: path.join(dir, `${id}.sql.gz`) })).toMatch(/is not in BACKUP_DIR/)
    expect(foreignFileProblem(backups, { backup_id: id, file_path: path.join(backups, '..', `${id}.sql.gz`) })).toMatch(/is not in BACKUP_DIR/)
    expect(foreignFileProblem(backups, { backup_id: id, file_path: path.join(backups, 'other_20261201_030000.sql.gz') })).toMatch(/is not shop_/)
    fs.symlinkSync('/etc/hostname', path.join(backups, `${id}.sql.gz`))
    expect(foreignFileProblem(backups, { backup_id: id, file_path: path.join(backups, `${id}.sql.gz`) })).toMatch(/is a symbolic link/)
  })

  it('a backup dated after the clock and its skew is future-dated', () => {
    const now = new Date('2026-12-07T05:00:00Z')
    expect(isFutureDated({ created_at: '2026-12-07T05:04:59Z' }, now)).toBe(false)
    expect(isFutureDated({ created_at: '2026-12-07T05:05:01Z' }, now)).toBe(true)
  })
})
