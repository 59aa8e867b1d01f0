import fs from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { exec, ROOT, runScript, tempDir } from '../support/scripts.ts'

// status.sh against state files in a temp directory, with Docker unreachable (DOCKER_HOST points at
// no socket): it must still print every section it can read and say what it could not.
const dir = tempDir('status-')
const deployDir = path.join(dir, 'deploy')
const backupDir = path.join(dir, 'backups')
const logDir = path.join(dir, 'log')
const metricsDir = path.join(dir, 'metrics')
for (const d of [deployDir, backupDir, logDir, metricsDir]) fs.mkdirSync(d)

const hoursAgo = (h: number): string => new Date(Date.now() - h * 3600_000).toISOString().slice(0, 19) + 'Z'
const sha = (c: string): string => c.repeat(40)

function artifact(tag: string, at: string): Record<string, unknown> {
  return { artifact_id: tag, git_commit_sha: sha('a'), git_tag: tag, docker_image_uri: `registry.example/bot:${tag}`, docker_image_digest: null, deployed: true, deployed_at: at, rollback_from: null, schema_revision: null }
}

function event(id: string, tag: string, status: string, at: string): Record<string, unknown> {
  return {
    event_id: `00000000-0000-4000-8000-00000000000${id}`, event_type: 'deploy', started_at: at, completed_at: at, duration_seconds: 60, triggered_by: 'manual', operator: 'ops',
    artifact_id: tag, previous_artifact_id: null, status, error_message: status === 'success' ? null : 'health gate failed', health_check_passed: status === 'success', backup_created: true,
    migration_applied: false, backup_id: null, downtime_seconds: 2.5, schema_revision_before: null, schema_revision_after: null, pid: 1, host: 'droplet',
  }
}

function backup(id: string, at: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    backup_id: id, created_at: at, backup_type: 'scheduled', file_path: path.join(backupDir, `${id}.sql.gz`), file_size_mb: 1, file_size_bytes: 1_048_576, database_name: 'toogoodtogo',
    pg_dump_version: '15.5', compressed: true, sha256: 'b'.repeat(64), row_counts: { users: 3 }, verified: true, verified_at: at, retention_until: at, artifact_id: null, ...extra,
  }
}

const env = {
  DEPLOY_DIR: deployDir,
  BACKUP_DIR: backupDir,
  LOG_FILE: path.join(logDir, 'deployment.log'),
  METRICS_DIR: metricsDir,
  ENV_FILE: path.join(deployDir, '.env.production'),
  COMPOSE_PROJECT_NAME: 'ttgstatustest',
  // no Docker daemon here: every compose/docker probe fails at once
  DOCKER_HOST: 'unix:///nonexistent/docker.sock',
}

let alertmanager: http.Server
let alertmanagerUrl = ''
beforeAll(async () => {
  fs.writeFileSync(path.join(deployDir, 'artifacts.json'), JSON.stringify({ current: artifact('v1.2.0', hoursAgo(30)), previous: artifact('v1.1.0', hoursAgo(80)) }))
  fs.writeFileSync(path.join(logDir, 'deployments.log'), [event('1', 'v1.2.0', 'success', hoursAgo(30)), event('2', 'v1.3.0', 'rolled_back', hoursAgo(2)), { ...event('3', 'v1.2.0', 'success', hoursAgo(2)), event_type: 'rollback', triggered_by: 'automated', rollback_of: event('2', 'v1.3.0', 'rolled_back', hoursAgo(2)).event_id }].map((e) => JSON.stringify(e)).join('\n') + '\n')
  fs.writeFileSync(
    path.join(backupDir, 'backup_index.json'),
    JSON.stringify({
      backups: [
        backup('toogoodtogo_20261130_030010', hoursAgo(50), { last_drill: { at: hoursAgo(49), outcome: 'passed', detail: 'ok' }, offsite: { key: 'k1', uploaded_at: hoursAgo(49.5), size: 2000, sha256: 'c'.repeat(64) } }),
        backup('toogoodtogo_20261201_030010', hoursAgo(5)),
      ],
    }),
  )
  alertmanager = http.createServer((req, res) => {
    expect(req.url).toBe('/api/v2/alerts?active=true&silenced=false&inhibited=false')
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify([{ labels: { alertname: 'RedisDown', severity: 'critical' }, annotations: { summary: 'Redis is down' }, startsAt: hoursAgo(6.5 / 60), status: { state: 'active' } }]))
  })
  await new Promise<void>((resolve) => alertmanager.listen(0, '127.0.0.1', resolve))
  alertmanagerUrl = `http://127.0.0.1:${(alertmanager.address() as AddressInfo).port}`
})
afterAll(() => {
  alertmanager.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

describe('status.sh', () => {
  it('prints every section from the state files, and health as unreachable, without crashing', async () => {
    const started = Date.now()
    const r = await runScript('status', [], env)
    expect(Date.now() - started).toBeLessThan(15_000)
    expect(r.code, r.stderr).toBe(1) // things need attention: the rolled-back deploy, the services
    expect(r.stdout).toMatch(/^Running {6}v1\.2\.0 \(aaaaaaa\) since .* UTC, 1d 6h ago$/m)
    expect(r.stdout).toContain('             previous: v1.1.0')
    expect(r.stdout).toMatch(/^Last deploy  deploy v1\.3\.0: ROLLED_BACK, .* 2h 0m ago, downtime 2\.5s \(manual\)\n {13}health gate failed$/m)
    expect(r.stdout).toMatch(/^Backup {7}toogoodtogo_20261201_030010 \(scheduled, 1MB, verified\), .* 5h 0m ago$/m)
    expect(r.stdout).toMatch(/^Off-site {5}toogoodtogo_20261130_030010 \(2KB\), .* 2d 1h ago$/m)
    expect(r.stdout).toMatch(/^Drill {8}PASSED on toogoodtogo_20261130_030010, .* 2d 1h ago$/m)
    expect(r.stdout).toMatch(/^Disk {9}\S+ .* free \(\d+(\.\d)?%\)/m)
    // Docker unreachable: each service says so; the screen goes on
    expect(r.stdout).toMatch(/^Health {7}every service: unhealthy \(docker: .*Cannot connect to the Docker daemon.*\)$/m)
    expect(r.stdout).toContain('Alerts       monitoring not configured (ALERTMANAGER_URL)')
    expect(r.stdout).toMatch(/^Unreadable {3}Docker disk use \(docker system df\): .*Cannot connect to the Docker daemon/m)
    expect(r.stdout).toMatch(/^Needs attention: last deploy rolled_back; .*bot unhealthy/m)
    expect(r.stderr).not.toMatch(/ERROR|at .*\.ts:\d+/)
    // a screen, not an event: nothing in LOG_FILE
    expect(fs.existsSync(env.LOG_FILE)).toBe(false)
  })

  it('names a state file it cannot read and still shows the rest', async () => {
    const broken = { ...env, AUDIT_LOG: path.join(dir, 'broken-deployments.log') }
    fs.writeFileSync(broken.AUDIT_LOG, '{not json\n')
    const r = await runScript('status', [], broken)
    expect(r.stdout).toMatch(/^Unreadable   deployment history \(.*broken-deployments\.log\): Audit log .* line 1 is not valid JSON/m)
    expect(r.stdout).toContain('Last deploy  none recorded')
    expect(r.stdout).toMatch(/^Running {6}v1\.2\.0/m)
    expect(r.stdout).toMatch(/could not be read/)
  })

  it('lists the alerts firing in Alertmanager, and says so when Alertmanager does not answer', async () => {
    const up = await runScript('status', [], { ...env, ALERTMANAGER_URL: alertmanagerUrl })
    expect(up.stdout).toMatch(/^Alerts {7}1 firing\n {13}RedisDown \[critical\] Redis is down \(since .* 6m ago\)$/m)
    const down = await runScript('status', [], { ...env, ALERTMANAGER_URL: 'http://127.0.0.1:9' })
    expect(down.stdout).toMatch(/^Unreadable {3}alerts \(http:\/\/127\.0\.0\.1:9\): /m)
  })

  it('--json prints the report alone on stdout, through the .sh wrapper', async () => {
    const r = await exec([path.join(ROOT, 'scripts', 'status.sh'), '--json'], { ...env, NO_COLOR: '1' })
    const report = JSON.parse(r.stdout) as { release: { version: string }; health: { services: Record<string, { status: string }> }; needs_attention: string[]; newest_offsite: { backup_id: string } }
    expect(report.release.version).toBe('v1.2.0')
    expect(report.newest_offsite.backup_id).toBe('toogoodtogo_20261130_030010')
    expect(report.health.services.bot?.status).toBe('unhealthy')
    expect(report.health.services.redis?.status).toBe('unhealthy')
    expect(report.needs_attention).toContain('last deploy rolled_back')
  })

  it('--help documents it', async () => {
    const r = await runScript('status', ['--help'], env)
    expect(r.code).toBe(0)
    expect(r.stdout).toContain('status [--json]')
  })
})
