import { describe, expect, it } from 'vitest'
import { restoreTargetOptions } from '../../lib/commands/pgbackrest.ts'
import { archivedUpTo, archivingProblem, chooseType, parseArchiverStatus, type PhysicalBackup } from '../../lib/db/pitr.ts'
import { checkCounts, keyTableCountSql, parseTarget } from '../../lib/db/pitr-restore.ts'

const NOW = new Date('2026-12-02T12:00:00Z')

describe('restore --to-time targets', () => {
  it('take latest or a time with its zone, in the forms an operator types', () => {
    expect(parseTarget('latest', NOW)).toBe('latest')
    expect(parseTarget('2026-12-02 10:31:00+00', NOW)).toEqual(new Date('2026-12-02T10:31:00Z'))
    expect(parseTarget('2026-12-02T10:31:00Z', NOW)).toEqual(new Date('2026-12-02T10:31:00Z'))
    expect(parseTarget('2026-12-02 11:31:00+01:00', NOW)).toEqual(new Date('2026-12-02T10:31:00Z'))
    expect(parseTarget('2026-12-02 11:31:00.250+0100', NOW)).toEqual(new Date('2026-12-02T10:31:00.250Z'))
    expect(parseTarget('2026-12-02 10:31+00', NOW)).toEqual(new Date('2026-12-02T10:31:00Z'))
  })

  it('refuse a time without a zone, a malformed one and one in the future, saying what to type', () => {
    expect(() => parseTarget('2026-12-02 10:31:00', NOW)).toThrow(/with its zone, such as "2026-12-02 10:31:00\+00"/)
    expect(() => parseTarget('yesterday', NOW)).toThrow(/expected latest or a time/)
    expect(() => parseTarget('2026-13-02 10:31:00+00', NOW)).toThrow(/not a valid time/)
    expect(() => parseTarget('2026-12-02 12:00:01+00', NOW)).toThrow(/in the future; use --to-time latest/)
  })

  it('become pgBackRest options: promote at a time, the end of the archive for latest', () => {
    expect(restoreTargetOptions(new Date('2026-12-02T10:31:00.250Z'), 1)).toEqual(['--repo=1', '--type=time', '--target=2026-12-02 10:31:00.250+00', '--target-action=promote'])
    expect(restoreTargetOptions('latest', 2)).toEqual(['--repo=2', '--type=default'])
  })
})

function backup(type: string, repo: number, stopped: string): PhysicalBackup {
  return { label: `x${type}`, type, repo, startedAt: new Date(stopped), stoppedAt: new Date(stopped), sizeBytes: 1, storedBytes: 1 }
}

describe('the base backup a scheduled run takes', () => {
  it('is full when the repository holds no full one from the last 7 days, differential otherwise', () => {
    expect(chooseType([], 1, NOW)).toBe('full')
    expect(chooseType([backup('full', 1, '2026-11-30T03:00:00Z')], 1, NOW)).toBe('diff')
    expect(chooseType([backup('full', 1, '2026-11-24T03:00:00Z'), backup('diff', 1, '2026-12-01T03:00:00Z')], 1, NOW)).toBe('full')
    // each repository on its own: repo2 missed its full one
    expect(chooseType([backup('full', 1, '2026-11-30T03:00:00Z')], 2, NOW)).toBe('full')
  })
})

describe('WAL archiving health', () => {
  const healthy = parseArchiverStatus('on|000000010000000000000010|1796212700|0||0|0|0')

  it('parses pg_stat_archiver and the archive_status directory', () => {
    expect(healthy).toEqual({ archiveMode: 'on', lastArchivedWal: '000000010000000000000010', lastArchivedAt: new Date(1796212700 * 1000), failedCount: 0, lastFailedWal: null, lastFailedAt: null, waiting: 0, oldestWaitingSince: null })
  })

  it('is fine while nothing waits, however long ago the last segment was archived (an idle database switches no segment)', () => {
    expect(archivingProblem({ ...healthy, lastArchivedAt: new Date('2026-12-01T00:00:00Z') }, NOW, 60)).toBeNull()
    expect(archivedUpTo(healthy, NOW)).toEqual(NOW)
  })

  it('is a problem when the last attempt failed, naming the segment and when', () => {
    const failing = { ...healthy, lastArchivedAt: new Date('2026-12-02T11:58:00Z'), failedCount: 3, lastFailedWal: '000000010000000000000011', lastFailedAt: new Date('2026-12-02T11:59:30Z'), waiting: 1, oldestWaitingSince: new Date('2026-12-02T11:59:29Z') }
    expect(archivingProblem(failing, NOW, 60)).toBe('WAL archiving is failing; last failure: 000000010000000000000011 at 2026-12-02T11:59:30Z')
    expect(archivedUpTo(failing, NOW)).toEqual(new Date('2026-12-02T11:59:29Z'))
    // a failure the archiver has since retried successfully is history
    expect(archivingProblem({ ...failing, lastArchivedAt: new Date('2026-12-02T11:59:40Z'), waiting: 0, oldestWaitingSince: null }, NOW, 60)).toBeNull()
  })

  it('is a problem when a segment waits longer than archive_timeout plus a minute', () => {
    const behind = { ...healthy, waiting: 4, oldestWaitingSince: new Date('2026-12-02T11:57:00Z') }
    expect(archivingProblem(behind, NOW, 60)).toBe('WAL archiving is behind: 4 segment(s) waiting, the oldest for 3m')
    expect(archivingProblem({ ...behind, oldestWaitingSince: new Date('2026-12-02T11:58:30Z') }, NOW, 60)).toBeNull()
  })

  it('is a problem when the server does not archive at all', () => {
    expect(archivingProblem({ ...healthy, archiveMode: 'off' }, NOW, 60)).toMatch(/archive_mode=off\) though PITR_ENABLED=true/)
  })
})

describe('verification of a recovered cluster', () => {
  it('counts KEY_TABLES by name or schema-qualified name, or the two largest tables', () => {
    expect(keyTableCountSql(['orders', "pub'lic.users"])).toContain("WHERE relname IN ('orders', 'pub''lic.users') OR schemaname || '.' || relname IN ('orders', 'pub''lic.users')")
    expect(keyTableCountSql([])).toMatch(/ORDER BY pg_total_relation_size\(relid\) DESC LIMIT 2$/)
  })

  it('fails when a key table is missing or there is no table at all', () => {
    expect(checkCounts('public.orders=12\npublic.users=3\n', ['orders'])).toEqual(new Map([['public.orders', 12], ['public.users', 3]]))
    expect(() => checkCounts('public.users=3\n', ['orders', 'public.users'])).toThrow('key tables missing after recovery: orders')
    expect(() => checkCounts('', [])).toThrow('the recovered database has no tables')
  })
})
