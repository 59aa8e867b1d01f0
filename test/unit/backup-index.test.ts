import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { chooseExpired } from '../../lib/db/backup.ts'
import { BACKUP_ID, backupRecordSchema, readIndex, writeIndex, type BackupRecord } from '../../lib/db/backup-index.ts'

function record(id: string, created: string, overrides: Partial<BackupRecord> = {}): BackupRecord {
  return backupRecordSchema.parse({
    backup_id: id, created_at: created, backup_type: 'scheduled', file_path: `/b/${id}.sql.gz`, file_size_mb: 1, file_size_bytes: 1000,
    database_name: 'toogoodtogo', pg_dump_version: '15.20', compressed: true, sha256: 'a'.repeat(64), row_counts: { 'public.users': 3 },
    verified: true, verified_at: created, retention_until: new Date(Date.parse(created) + 7 * 86400_000).toISOString().slice(0, 19) + 'Z', artifact_id: null,
    ...overrides,
  })
}

describe('backup ids', () => {
  it('accept the contract form and reject anything that could name another path', () => {
    for (const ok of ['toogoodtogo_20251228_030010', 'toogoodtogo_20251228_030010_2']) expect(BACKUP_ID.test(ok), ok).toBe(true)
    for (const bad of ['../toogoodtogo_20251228_030010', 'toogoodtogo_20251228_030010/..', 'a/b_20251228_030010', 'x_2025122_030010', 'toogoodtogo_20251228_030010.sql.gz', '', 'x_20251228_030010\n']) {
      expect(BACKUP_ID.test(bad), JSON.stringify(bad)).toBe(false)
    }
  })
})

describe('index file', () => {
  it('round-trips, sorted oldest first, and a missing file is an empty index', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-idx-'))
    expect(readIndex(dir)).toEqual({ backups: [] })
    writeIndex(dir, { backups: [record('db_20250102_000000', '2025-01-02T00:00:00Z'), record('db_20250101_000000', '2025-01-01T00:00:00Z')] })
    expect(readIndex(dir).backups.map((b) => b.backup_id)).toEqual(['db_20250101_000000', 'db_20250102_000000'])
    expect(fs.statSync(path.join(dir, 'backup_index.json')).mode & 0o777).toBe(0o600)
    expect(fs.readdirSync(dir)).toEqual(['backup_index.json'])
  })
  it('reports where an invalid index is wrong and leaves it alone', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-idx-'))
    const file = path.join(dir, 'backup_index.json')
    fs.writeFileSync(file, JSON.stringify({ backups: [{ ...record('db_20250101_000000', '2025-01-01T00:00:00Z'), file_size_mb: -1 }] }))
    expect(() => readIndex(dir)).toThrow(/invalid at backups\.0\.file_size_mb/)
    fs.writeFileSync(file, '{"backups": [')
    expect(() => readIndex(dir)).toThrow(/not valid JSON/)
    expect(fs.readFileSync(file, 'utf8')).toBe('{"backups": [')
  })
})

describe('retention', () => {
  const now = new Date('2025-03-01T00:00:00Z')
  const day = (d: number) => `2025-02-${String(d).padStart(2, '0')}T03:00:00Z`

  it('deletes only what is both beyond the newest N and past retention_until', () => {
    const backups = Array.from({ length: 10 }, (_, i) => record(`db_202502${String(i + 10).padStart(2, '0')}_030000`, day(i + 10)))
    const expired = chooseExpired({ backups }, now, 7).map((b) => b.backup_id)
    // On Mar 1 the 3 beyond the newest 7 are all past their 7 days; on Feb 17 none is yet.
    expect(expired).toEqual(['db_20250212_030000', 'db_20250211_030000', 'db_20250210_030000'])
    expect(chooseExpired({ backups }, new Date('2025-02-17T00:00:00Z'), 7)).toEqual([])
  })

  it('never deletes the newest verified backup, even when every other rule would', () => {
    const backups = [record('db_20250101_030000', '2025-01-01T03:00:00Z'), record('db_20250102_030000', '2025-01-02T03:00:00Z', { verified: false })]
    expect(chooseExpired({ backups }, now, 0).map((b) => b.backup_id)).toEqual(['db_20250102_030000'])
  })
})
