import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it, onTestFinished, vi } from 'vitest'
import { setDryRun } from '../../lib/core/shell.ts'
import { formatMetrics, metricsFile, publishMetrics, recordBackup, recordDeploy, recordDrill, recordHealth, recordOffsiteCopy, recordPhysicalBackup, recordWalArchive } from '../../lib/core/metrics.ts'

let dir: string
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'metrics-'))
})
afterEach(() => {
  vi.restoreAllMocks()
  fs.chmodSync(dir, 0o700)
  fs.rmSync(dir, { recursive: true, force: true })
})

const at = new Date('2026-12-01T03:00:10Z') // 1796094010

describe('the exposition format', () => {
  it('writes HELP and TYPE once per family, families contiguous, labels escaped', () => {
    const text = formatMetrics([
      { name: 'toogoodtogo_release_info', labels: { version: 'v1"2\\3\n' }, value: 1 },
      { name: 'toogoodtogo_drill_last_success', value: 0 },
      { name: 'toogoodtogo_release_info', labels: { version: 'v2' }, value: 1 },
    ])
    expect(text).toBe(
      [
        '# HELP toogoodtogo_release_info The running release (version label), always 1',
        '# TYPE toogoodtogo_release_info gauge',
        'toogoodtogo_release_info{version="v1\\"2\\\\3\\n"} 1',
        'toogoodtogo_release_info{version="v2"} 1',
        '# HELP toogoodtogo_drill_last_success 1 when the last restore drill passed, 0 when it failed',
        '# TYPE toogoodtogo_drill_last_success gauge',
        'toogoodtogo_drill_last_success 0',
        '',
      ].join('\n'),
    )
  })

  it('a backup publishes its time and size under its type, in its own file', () => {
    expect(recordBackup({ METRICS_DIR: dir }, { type: 'scheduled', finishedAt: at, sizeBytes: 1234, durationSeconds: 42.5 })).toBe(true)
    const text = fs.readFileSync(path.join(dir, 'toogoodtogo_backup_scheduled.prom'), 'utf8')
    expect(text).toContain('toogoodtogo_backup_last_success_timestamp_seconds{type="scheduled"} 1796094010\n')
    expect(text).toContain('toogoodtogo_backup_last_size_bytes{type="scheduled"} 1234\n')
    expect(text).toContain('toogoodtogo_backup_last_duration_seconds{type="scheduled"} 42.5\n')
    recordBackup({ METRICS_DIR: dir }, { type: 'manual', finishedAt: at, sizeBytes: 1 })
    expect(fs.readdirSync(dir).sort()).toEqual(['toogoodtogo_backup_manual.prom', 'toogoodtogo_backup_scheduled.prom'])
  })

  it('a deploy publishes every outcome as 0 or 1, the downtime and the running version', () => {
    recordDeploy({ METRICS_DIR: dir }, { event: 'deploy', outcome: 'rolled_back', finishedAt: at, downtimeSeconds: 3.2, running: { version: 'v1.1.0', deployedAt: new Date('2026-11-30T10:00:00Z') } })
    const text = fs.readFileSync(metricsFile({ METRICS_DIR: dir }, 'deploy'), 'utf8')
    expect(text).toContain('toogoodtogo_deploy_last_outcome{event="deploy",outcome="success"} 0\n')
    expect(text).toContain('toogoodtogo_deploy_last_outcome{event="deploy",outcome="failed"} 0\n')
    expect(text).toContain('toogoodtogo_deploy_last_outcome{event="deploy",outcome="rolled_back"} 1\n')
    expect(text).toContain('toogoodtogo_deploy_last_downtime_seconds{event="deploy"} 3.2\n')
    expect(text).toContain('toogoodtogo_release_info{version="v1.1.0"} 1\n')
    expect(text).toContain('toogoodtogo_release_deployed_timestamp_seconds 1796032800\n')
  })

  it('off-site, drill, WAL and health each have their own file', () => {
    const t = { METRICS_DIR: dir }
    recordOffsiteCopy(t, { finishedAt: at, sizeBytes: 99 })
    recordDrill(t, { finishedAt: at, passed: false })
    recordWalArchive(t, at)
    recordHealth(t, at, [{ service: 'bot', healthy: true }, { service: 'redis', healthy: false }])
    expect(fs.readFileSync(metricsFile(t, 'offsite'), 'utf8')).toContain('toogoodtogo_offsite_last_success_timestamp_seconds 1796094010\n')
    expect(fs.readFileSync(metricsFile(t, 'drill'), 'utf8')).toContain('toogoodtogo_drill_last_success 0\n')
    expect(fs.readFileSync(metricsFile(t, 'wal'), 'utf8')).toContain('toogoodtogo_wal_last_archived_timestamp_seconds 1796094010\n')
    const health = fs.readFileSync(metricsFile(t, 'health'), 'utf8')
    expect(health).toContain('toogoodtogo_service_healthy{service="bot"} 1\n')
    expect(health).toContain('toogoodtogo_service_healthy{service="redis"} 0\n')
  })

  it('a base backup publishes per repository, without a warning (its name passes the file name check)', () => {
    const t = { METRICS_DIR: dir }
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true)
    expect(recordPhysicalBackup(t, 1, at)).toBe(true)
    expect(recordPhysicalBackup(t, 2, new Date('2026-11-30T03:00:00Z'))).toBe(true)
    expect(stderr).not.toHaveBeenCalled()
    expect(fs.readdirSync(dir).sort()).toEqual(['toogoodtogo_physical_backup_repo1.prom', 'toogoodtogo_physical_backup_repo2.prom'])
    expect(fs.readFileSync(metricsFile(t, 'physical_backup_repo1'), 'utf8')).toContain('toogoodtogo_physical_backup_last_success_timestamp_seconds{repo="repo1"} 1796094010\n')
    // a later run into repo1 alone leaves repo2's time standing
    recordPhysicalBackup(t, 1, at)
    expect(fs.readFileSync(metricsFile(t, 'physical_backup_repo2'), 'utf8')).toContain('{repo="repo2"} 1796007600\n')
  })
})

describe('publishing', () => {
  it('replaces the file by rename: no temp file left, readable by node_exporter (0644) whatever the umask', () => {
    const t = { METRICS_DIR: dir }
    const umask = process.umask(0o077)
    onTestFinished(() => {
      process.umask(umask)
    })
    const file = metricsFile(t, 'drill')
    fs.writeFileSync(file, 'old\n')
    const inodeBefore = fs.statSync(file).ino
    const renames = vi.spyOn(fs, 'renameSync')
    expect(recordDrill(t, { finishedAt: at, passed: true })).toBe(true)
    // written beside it under a name the collector ignores, then renamed over it
    expect(renames).toHaveBeenCalledTimes(1)
    const [from, to] = renames.mock.calls[0] ?? []
    expect(String(from)).toMatch(/\/\.toogoodtogo_drill\.prom\.[0-9a-f]{16}\.tmp$/)
    expect(to).toBe(file)
    expect(fs.statSync(file).ino).not.toBe(inodeBefore)
    expect(fs.readdirSync(dir)).toEqual(['toogoodtogo_drill.prom'])
    expect(fs.statSync(file).mode & 0o777).toBe(0o644)
  })

  it('an unwritable directory is a warning, never an exception', () => {
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true)
    // root ignores modes: renaming over a directory fails whoever we are
    fs.mkdirSync(path.join(dir, 'toogoodtogo_backup_scheduled.prom'))
    expect(() => recordBackup({ METRICS_DIR: dir }, { type: 'scheduled', finishedAt: at, sizeBytes: 1 })).not.toThrow()
    expect(recordBackup({ METRICS_DIR: dir }, { type: 'scheduled', finishedAt: at, sizeBytes: 1 })).toBe(false)
    expect(String(stderr.mock.calls.at(-1)?.[0])).toMatch(/WARN: Could not publish metrics to .*toogoodtogo_backup_scheduled\.prom/)
    expect(fs.readdirSync(dir)).toEqual(['toogoodtogo_backup_scheduled.prom'])
  })

  it('no collector directory (monitoring not installed) is quiet: nothing written, no warning', () => {
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true)
    expect(recordDrill({ METRICS_DIR: path.join(dir, 'does-not-exist') }, { finishedAt: at, passed: true })).toBe(false)
    expect(stderr.mock.calls.map((c) => String(c[0])).join('')).not.toContain('WARN')
  })

  it('a dry run publishes nothing', () => {
    setDryRun(true)
    try {
      expect(recordDrill({ METRICS_DIR: dir }, { finishedAt: at, passed: true })).toBe(false)
    } finally {
      setDryRun(false)
    }
    expect(fs.readdirSync(dir)).toEqual([])
  })

  it('a failed rename leaves no temp file behind', () => {
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true)
    vi.spyOn(fs, 'renameSync').mockImplementation(() => {
      throw new Error('EIO')
    })
    expect(publishMetrics({ METRICS_DIR: dir }, 'drill', [{ name: 'toogoodtogo_drill_last_success', value: 1 }])).toBe(false)
    expect(fs.readdirSync(dir)).toEqual([])
  })

  it('a path that is not a directory (unwritable even for root) is a warning too', () => {
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true)
    const file = path.join(dir, 'plain-file')
    fs.writeFileSync(file, '')
    expect(recordDrill({ METRICS_DIR: file }, { finishedAt: at, passed: true })).toBe(false)
  })
})
