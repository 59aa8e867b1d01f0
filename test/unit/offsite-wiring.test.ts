import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfig } from '../../lib/core/config.ts'
import { clearSecretsForTests, redact } from '../../lib/core/redact.ts'
import { backupRecordSchema, readIndex, type BackupRecord } from '../../lib/db/backup-index.ts'
import { failureRecord, listingTable, mergeListing } from '../../lib/offsite/copies.ts'
import type { RemoteBackup } from '../../lib/offsite/catalog.ts'
import { OffsiteError } from '../../lib/core/errors.ts'
import type { Sidecar } from '../../lib/offsite/sidecar.ts'

// What phase 2 adds around lib/offsite: the settings read like the rest of the configuration, the
// index records that old indexes still parse, and backup --list's merge of index and bucket.
const RECIPIENT = 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p'

function record(id: string, created: string, overrides: Partial<BackupRecord> = {}): BackupRecord {
  return backupRecordSchema.parse({
    backup_id: id, created_at: created, backup_type: 'scheduled', file_path: `/b/${id}.sql.gz`, file_size_mb: 1, file_size_bytes: 2_000_000,
    database_name: 'shop', pg_dump_version: '15', compressed: true, sha256: 'a'.repeat(64), row_counts: {}, verified: true, verified_at: created,
    retention_until: created, artifact_id: null, ...overrides,
  })
}

function remote(id: string, created: string, extra: Record<string, unknown> = {}): RemoteBackup {
  const sidecar = {
    format: 'toogoodtogo-offsite-backup/1', key: `p/${id}.sql.gz.age`, uploaded_at: created, backup_id: id, created_at: created, backup_type: 'manual',
    database_name: 'shop', row_counts: {}, file_name: `${id}.sql.gz`, plaintext: { size: 3_000_000, sha256: 'b'.repeat(64) },
    ciphertext: { size: 3_000_100, sha256: 'c'.repeat(64) }, encryption: { scheme: 'age', recipient: RECIPIENT }, record: { verified: true, ...extra },
  } as Sidecar
  return { backupId: id, key: sidecar.key, sidecarKey: `${sidecar.key}.json`, size: 3_000_100, lastModified: new Date(created), sidecar }
}

describe('off-site settings in the configuration', () => {
  it('are off while OFFSITE_S3_BUCKET is empty, as before', () => {
    expect(loadConfig({ ENV_FILE: '/nonexistent/.env.production' }).offsite).toBeNull()
  })

  it('come from .env.production, the environment wins, and the secrets are redacted', () => {
    clearSecretsForTests()
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-offsite-cfg-'))
    const file = path.join(dir, '.env.production')
    fs.writeFileSync(file, [
      'OFFSITE_S3_ENDPOINT=https://fra1.digitaloceanspaces.com', 'OFFSITE_S3_BUCKET=shop-backups', 'OFFSITE_S3_ACCESS_KEY_ID=DO00KEYIDVALUE',
      'OFFSITE_S3_SECRET_ACCESS_KEY=sEcReT/value+1', `BACKUP_AGE_RECIPIENT=${RECIPIENT}`, 'BACKUP_AGE_IDENTITY_FILE=/opt/toogoodtogo/backup-age.key', '',
    ].join('\n'))
    const cfg = loadConfig({ ENV_FILE: file, OFFSITE_RETENTION_COUNT: '3' })
    expect(cfg.offsite).toEqual({
      endpoint: 'https://fra1.digitaloceanspaces.com', region: 'us-east-1', bucket: 'shop-backups', prefix: 'toogoodtogo/', accessKeyId: 'DO00KEYIDVALUE',
      secretAccessKey: 'sEcReT/value+1', recipient: RECIPIENT, identityFile: '/opt/toogoodtogo/backup-age.key', retention: { count: 3, days: 30 },
    })
    expect(redact('key DO00KEYIDVALUE secret sEcReT/value+1')).toBe('key *** secret ***')
    expect(() => loadConfig({ ENV_FILE: file, BACKUP_AGE_RECIPIENT: 'age1typo' })).toThrow(/Invalid BACKUP_AGE_RECIPIENT="age1typo"/)
    expect(() => loadConfig({ ENV_FILE: file, OFFSITE_S3_ENDPOINT: 'fra1.digitaloceanspaces.com' })).toThrow(/Invalid OFFSITE_S3_ENDPOINT/)
  })
})

describe('the index record', () => {
  it('an index written before off-site copies parses, with no copy and no failure', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-offsite-idx-'))
    const { offsite: _o, offsite_error: _e, ...old } = record('shop_20261201_030000', '2026-12-01T03:00:00Z')
    fs.writeFileSync(path.join(dir, 'backup_index.json'), JSON.stringify({ backups: [old] }))
    expect(readIndex(dir).backups[0]).toMatchObject({ offsite: null, offsite_error: null })
  })

  it('a failure names the variable to fix', () => {
    const failure = failureRecord(new OffsiteError('credentials', 'Off-site upload failed: the server refused the signature', { variable: 'OFFSITE_S3_SECRET_ACCESS_KEY' }))
    expect(failure).toMatchObject({ problem: 'credentials', message: 'Off-site upload failed: the server refused the signature (check OFFSITE_S3_SECRET_ACCESS_KEY)' })
  })
})

describe('backup --list', () => {
  it('one row per backup, local and off-site, oldest first', () => {
    const local = [
      record('shop_20261201_030000', '2026-12-01T03:00:00Z', { last_drill: { at: '2026-12-01T04:00:00Z', outcome: 'passed', detail: '' } }),
      record('shop_20261202_030000', '2026-12-02T03:00:00Z', { offsite_error: { at: '2026-12-02T03:01:00Z', problem: 'network', message: 'cannot reach' } }),
      record('shop_20261130_030000', '2026-11-30T03:00:00Z', { verified: false }),
    ]
    const bucket = [remote('shop_20261201_030000', '2026-12-01T03:00:00Z'), remote('shop_20261130_030000', '2026-11-30T03:00:00Z'), remote('shop_20261125_030000', '2026-11-25T03:00:00Z')]
    const present = new Set(['/b/shop_20261201_030000.sql.gz', '/b/shop_20261202_030000.sql.gz'])
    const rows = mergeListing(local, bucket, (f) => present.has(f))
    expect(rows.map((r) => [r.backup_id, r.where, r.verified])).toEqual([
      ['shop_20261125_030000', 'off-site', true],
      ['shop_20261130_030000', 'off-site', false],
      ['shop_20261201_030000', 'both', true],
      ['shop_20261202_030000', 'local', true],
    ])
    expect(rows[3]?.offsite_error).toBe('cannot reach')
    expect(mergeListing(local, null, () => false).map((r) => r.where)).toEqual(['missing', 'missing', 'missing'])
    expect(listingTable(rows, new Date('2026-12-02T05:30:00Z')).split('\n')).toEqual([
      'BACKUP ID             TYPE       SIZE   AGE     WHERE     VERIFIED  LAST DRILL',
      'shop_20261125_030000  manual     2.9MB  7d 2h   off-site  yes       -',
      'shop_20261130_030000  scheduled  1.9MB  2d 2h   off-site  no        -',
      'shop_20261201_030000  scheduled  1.9MB  1d 2h   both      yes       passed 2026-12-01',
      'shop_20261202_030000  scheduled  1.9MB  2h 30m  local     yes       -',
      '',
    ])
  })
})
