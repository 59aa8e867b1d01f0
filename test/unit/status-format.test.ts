import { describe, expect, it } from 'vitest'
import { formatAge } from '../../lib/core/format.ts'
import { formatStatus, needsAttention, newestBackup, newestOffsite, parseAlerts, parseSystemDf, type StatusReport } from '../../lib/status/report.ts'
import type { BackupRecord } from '../../lib/db/backup-index.ts'

const now = new Date('2026-12-02T08:00:00Z')

function report(overrides: Partial<StatusReport> = {}): StatusReport {
  return {
    generated_at: '2026-12-02T08:00:00Z',
    release: { version: 'v1.2.0', commit: 'abcdef0123456789abcdef0123456789abcdef01', deployed_at: '2026-12-01T10:00:00Z', previous: 'v1.1.0', rollback_from: null },
    last_deploy: { event_type: 'deploy', artifact_id: 'v1.2.0', status: 'success', started_at: '2026-12-01T09:58:00Z', completed_at: '2026-12-01T10:00:00Z', downtime_seconds: 3.2, error_message: null, triggered_by: 'github_action' },
    newest_backup: { backup_id: 'toogoodtogo_20261202_030010', backup_type: 'scheduled', created_at: '2026-12-02T03:00:10Z', size_bytes: 245 * 1024 * 1024, verified: true },
    newest_offsite: { backup_id: 'toogoodtogo_20261202_030010', uploaded_at: '2026-12-02T03:02:00Z', size_bytes: 246 * 1024 * 1024 },
    offsite_configured: true,
    last_drill: { at: '2026-11-29T04:00:00Z', outcome: 'passed', detail: 'ok', backup_id: 'toogoodtogo_20261129_030010' },
    wal_archived_at: null,
    base_backups: null,
    disks: [{ path: '/opt/backups/postgres', free_mb: 12_600, free_percent: 41.2 }],
    docker_disk: parseSystemDf('Images\t5\t2\t1.183GB\t745.2MB (62%)\nContainers\t3\t2\t12kB\t0B (0%)\nLocal Volumes\t2\t2\t48.5MB\t0B\nBuild Cache\t0\t0\t0B\t0B\n'),
    health: {
      timestamp: '2026-12-02T08:00:00Z',
      overall_status: 'healthy',
      services: {
        bot: { status: 'healthy', response_time_ms: 45, detail: 'response: 45ms', timed_out: false },
        postgres: { status: 'healthy', response_time_ms: 12, detail: 'response: 12ms', timed_out: false },
        redis: { status: 'healthy', response_time_ms: 3, detail: 'response: 3ms', timed_out: false },
        nginx: { status: 'not_deployed', response_time_ms: null, detail: 'webhook profile not running', timed_out: false },
      },
    },
    alerts: [],
    unreadable: [],
    ...overrides,
  }
}

describe('status screen', () => {
  it('shows every section on one screen, ages relative to now', () => {
    expect(formatStatus(report(), now)).toBe(
      [
        'toogoodtogo status, 2026-12-02 08:00:00 UTC',
        '',
        'Running      v1.2.0 (abcdef0) since 2026-12-01 10:00 UTC, 22h 0m ago',
        '             previous: v1.1.0',
        'Last deploy  deploy v1.2.0: SUCCESS, 2026-12-01 10:00 UTC, 22h 0m ago, downtime 3.2s (github_action)',
        'Backup       toogoodtogo_20261202_030010 (scheduled, 245MB, verified), 2026-12-02 03:00 UTC, 4h 59m ago',
        'Off-site     toogoodtogo_20261202_030010 (246MB), 2026-12-02 03:02 UTC, 4h 58m ago',
        'Drill        PASSED on toogoodtogo_20261129_030010, 2026-11-29 04:00 UTC, 3d 4h ago',
        'Disk         /opt/backups/postgres 12.3GB free (41.2%)',
        'Docker       images 1.183GB (745.2MB reclaimable), containers 12kB (0B reclaimable), volumes 48.5MB (0B reclaimable), build cache 0B (0B reclaimable)',
        'Health       bot: healthy (response: 45ms)',
        '             postgres: healthy (response: 12ms)',
        '             redis: healthy (response: 3ms)',
        '             nginx: not deployed (webhook profile not running)',
        'Alerts       none firing',
        '',
        'All good.',
        '',
      ].join('\n'),
    )
    expect(needsAttention(report(), now)).toEqual([])
  })

  it('says what it could not read and what needs attention, instead of failing', () => {
    const text = formatStatus(
      report({
        release: null,
        last_deploy: null,
        health: null,
        alerts: null,
        unreadable: ['running version (/opt/toogoodtogo/artifacts.json): invalid at current.git_commit_sha', 'health: no answer within 15s'],
      }),
      now,
    )
    expect(text).toContain('Running      nothing recorded in artifacts.json\n')
    expect(text).toContain('Health       could not be checked\n')
    expect(text).toContain('Alerts       monitoring not configured (ALERTMANAGER_URL)\n')
    expect(text).toContain('Unreadable   running version (/opt/toogoodtogo/artifacts.json): invalid at current.git_commit_sha\n')
    expect(text).toContain('Unreadable   health: no answer within 15s\n')
    expect(text).toMatch(/Needs attention: 2 thing\(s\) could not be read\n$/)
  })

  it('flags a rolled-back deploy, stale backups, a failed drill, low disk, unhealthy services and firing alerts', () => {
    const bad = report({
      last_deploy: { event_type: 'deploy', artifact_id: 'v1.3.0', status: 'rolled_back', started_at: '2026-12-02T07:00:00Z', completed_at: '2026-12-02T07:03:00Z', downtime_seconds: null, error_message: 'Migration failed: relation "x" exists', triggered_by: 'manual' },
      newest_backup: { backup_id: 'toogoodtogo_20261130_030010', backup_type: 'scheduled', created_at: '2026-11-30T03:00:10Z', size_bytes: 1, verified: false },
      newest_offsite: null,
      last_drill: { at: '2026-12-01T04:00:00Z', outcome: 'failed', detail: 'row counts differ', backup_id: 'b' },
      wal_archived_at: '2026-12-02T07:00:00Z',
      base_backups: [
        { repo: 1, type: 'diff', at: '2026-12-02T03:05:00Z', outcome: 'success', label: '20261201-030000F_20261202-030000D', duration_s: 40, detail: '' },
        { repo: 2, type: 'diff', at: '2026-12-02T03:06:00Z', outcome: 'failed', label: null, duration_s: 3, detail: 'HostConnectError' },
      ],
      disks: [{ path: '/', free_mb: 900, free_percent: 9.5 }],
      alerts: [{ name: 'RedisDown', severity: 'critical', summary: 'Redis is down', since: '2026-12-02T07:55:00Z' }],
    })
    const services = bad.health?.services
    if (services?.redis) services.redis = { status: 'unhealthy', response_time_ms: null, detail: 'connection refused: container exited', timed_out: false }
    expect(needsAttention(bad, now)).toEqual([
      'last deploy rolled_back',
      'newest backup older than 26h',
      'no off-site copy in 26h',
      'last restore drill failed',
      'WAL archive behind',
      'last base backup to repo2 failed',
      'disk / under 15% free',
      'redis unhealthy',
      '1 alert(s) firing',
    ])
    const text = formatStatus(bad, now)
    expect(text).toContain('Last deploy  deploy v1.3.0: ROLLED_BACK, 2026-12-02 07:03 UTC, 57m ago (manual)\n             Migration failed: relation "x" exists\n')
    expect(text).toContain('(scheduled, 1KB, NOT verified)')
    expect(text).toContain('Off-site     no copy yet\n')
    expect(text).toContain('WAL archive  everything up to 2026-12-02 07:00 UTC, 1h 0m ago\n')
    expect(text).toContain('Base backup  repo1 diff 20261201-030000F_20261202-030000D, 2026-12-02 03:05 UTC, 4h 55m ago\n             repo2 diff FAILED, 2026-12-02 03:06 UTC, 4h 54m ago\n')
    expect(text).toContain('Alerts       1 firing\n             RedisDown [critical] Redis is down (since 2026-12-02 07:55 UTC, 5m ago)\n')
  })

  it('says once that every probe failed the same way (Docker unreachable), without the argv', () => {
    const down = { status: 'unhealthy' as const, response_time_ms: null, timed_out: false }
    const text = formatStatus(report({
      health: {
        timestamp: '2026-12-02T08:00:00Z',
        overall_status: 'unhealthy',
        services: {
          bot: { ...down, detail: 'docker: Cannot connect to the Docker daemon (exit 1: docker ps --filter label=com.docker.compose.service=bot)' },
          redis: { ...down, detail: 'docker: Cannot connect to the Docker daemon (exit 1: docker ps --filter label=com.docker.compose.service=redis)' },
        },
      },
    }), now)
    expect(text).toContain('Health       every service: unhealthy (docker: Cannot connect to the Docker daemon)\nAlerts')
  })

  it('formats ages at a glance', () => {
    expect([0, 59, 60, 3599, 3600, 86399, 86400, 90061].map(formatAge)).toEqual(['0s', '59s', '1m', '59m', '1h 0m', '23h 59m', '1d 0h', '1d 1h'])
  })
})

describe('reading defensively', () => {
  it('takes the newest off-site copy and ignores records without a usable one', () => {
    expect(
      newestOffsite([
        { backup_id: 'a', offsite: { uploaded_at: '2026-12-01T03:00:00Z', size: 10 } },
        { backup_id: 'b', offsite: null },
        { backup_id: 'c' },
        { backup_id: 'd', offsite: { uploaded_at: 'not a time' } },
        { backup_id: 'e', offsite: { uploaded_at: '2026-12-02T03:00:00Z' } },
        null,
        'junk',
      ]),
    ).toEqual({ backup_id: 'e', uploaded_at: '2026-12-02T03:00:00Z', size_bytes: null })
    expect(newestOffsite([])).toBeNull()
  })

  it('passes over safety backups (what a restore replaced): the newest copy of the live data is the one an operator means', () => {
    const at = (day: number) => `2026-12-0${day}T03:00:00Z`
    const record = (id: string, day: number, type: BackupRecord['backup_type'], reason: string | null) => ({
      backup_id: id, backup_type: type, created_at: at(day), file_size_bytes: 1, verified: true, reason, offsite: { uploaded_at: at(day) },
    }) as unknown as BackupRecord
    const backups = [record('scheduled', 1, 'scheduled', null), record('pre', 2, 'pre_deployment', 'before deploying v1.2.0'), record('safety', 3, 'manual', 'safety backup: toogoodtogo as it was before restoring')]
    expect(newestBackup(backups)?.backup_id).toBe('pre')
    expect(newestOffsite(backups)?.backup_id).toBe('pre')
  })

  it("reads Alertmanager's API v2 alert list, skipping suppressed ones", () => {
    expect(
      parseAlerts([
        { labels: { alertname: 'DiskSpaceLow', severity: 'critical' }, annotations: { summary: 'Disk / under 15 % free' }, startsAt: '2026-12-02T07:00:00Z', status: { state: 'active' } },
        { labels: { alertname: 'Silenced' }, status: { state: 'suppressed' } },
      ]),
    ).toEqual([{ name: 'DiskSpaceLow', severity: 'critical', summary: 'Disk / under 15 % free', since: '2026-12-02T07:00:00Z' }])
    expect(() => parseAlerts({ error: 'x' })).toThrow('not a list of alerts')
  })
})
