import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startHookServer, type HookServer } from '../support/hook.ts'
import { runScript, tempDir } from '../support/scripts.ts'

// rollback.sh's one failure path with no Docker at all (DOCKER_HOST points at no socket): the
// target's image cannot be pulled. The rollback event the run opened is closed `failed` with the
// reason (never left `in_progress`), one notification says what runs now (here: unknown, Docker
// does not answer), that the database was not touched and where to look; exit 1. A deploy refused
// before anything changed leaves its event too (the contract creates it when the script starts).
const dir = tempDir('rollback-failure-')
const deployDir = path.join(dir, 'deploy')
const logDir = path.join(dir, 'log')
let hook: HookServer

const at = (minutesAgo: number): string => new Date(Date.now() - minutesAgo * 60_000).toISOString().slice(0, 19) + 'Z'

function deployEvent(n: number, tag: string, previous: string | null): Record<string, unknown> {
  return {
    event_id: `00000000-0000-4000-8000-00000000000${n}`, event_type: 'deploy', started_at: at(60 - n), completed_at: at(59 - n), duration_seconds: 60, triggered_by: 'manual', operator: 'ops',
    artifact_id: tag, previous_artifact_id: previous, status: 'success', error_message: null, health_check_passed: true, backup_created: true,
    migration_applied: false, backup_id: null, downtime_seconds: 1, schema_revision_before: null, schema_revision_after: null, pid: 1, host: 'droplet',
  }
}

const env = () => ({
  DEPLOY_DIR: deployDir,
  BACKUP_DIR: path.join(dir, 'backups'),
  LOG_FILE: path.join(logDir, 'deployment.log'),
  ENV_FILE: path.join(deployDir, '.env.production'),
  APP_DIR: path.join(deployDir, 'app'),
  COMPOSE_PROJECT_NAME: 'ttgrollbackfailure',
  NOTIFY_WEBHOOK_URL: hook.url,
  DOCKER_HOST: 'unix:///nonexistent/docker.sock',
})

beforeAll(async () => {
  hook = await startHookServer()
  for (const d of [deployDir, logDir, path.join(dir, 'backups')]) fs.mkdirSync(d, { recursive: true })
  fs.writeFileSync(path.join(deployDir, '.env.production'), [
    'BOT_IMAGE=registry.invalid/bot', 'APP_VERSION=v1.1.0', 'TELEGRAM_BOT_TOKEN=123456:ABC-def', 'POSTGRES_DB=toogoodtogo', 'POSTGRES_USER=toogoodtogo',
    'POSTGRES_PASSWORD=integrationPassw0rd', 'DATABASE_URL=postgresql://toogoodtogo:integrationPassw0rd@postgres:5432/toogoodtogo', 'REDIS_URL=redis://redis:6379/0', '',
  ].join('\n'), { mode: 0o600 })
  const artifact = (tag: string) => ({ artifact_id: tag, git_commit_sha: 'a'.repeat(40), git_tag: tag, docker_image_uri: `registry.invalid/bot:${tag}`, docker_image_digest: null, deployed: true, deployed_at: at(30), rollback_from: null, schema_revision: null })
  fs.writeFileSync(path.join(deployDir, 'artifacts.json'), JSON.stringify({ current: artifact('v1.1.0'), previous: { ...artifact('v1.0.0'), deployed: false } }))
  fs.writeFileSync(path.join(logDir, 'deployments.log'), [deployEvent(1, 'v1.0.0', null), deployEvent(2, 'v1.1.0', 'v1.0.0')].map((e) => JSON.stringify(e)).join('\n') + '\n')
})

afterAll(() => {
  hook?.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

describe('with Docker unreachable, every run closes the event it opened', () => {
  it('closes its event failed, tells once what runs now and that the database was not touched, exits 1', async () => {
    const r = await runScript('rollback', ['--yes'], env())
    expect(r.code, r.stdout + r.stderr).toBe(1)
    expect(r.stdout).toContain('INFO: Starting rollback from v1.1.0 to v1.0.0')
    expect(r.stderr).toMatch(/ERROR: Rollback to v1\.0\.0 failed: the image of v1\.0\.0 could not be pulled \(nothing was changed\): .*\. Running now: unknown \(.*\)\. Database: not touched\. Look further: \/.*\/scripts\/status\.sh\n/)
    const lines = fs.readFileSync(path.join(logDir, 'deployments.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    const rollback = lines.filter((e) => e.event_type === 'rollback')
    expect(rollback.map((e) => e.status)).toEqual(['in_progress', 'failed'])
    expect(rollback.at(-1)).toMatchObject({ artifact_id: 'v1.0.0', previous_artifact_id: 'v1.1.0', triggered_by: 'manual', rollback_of: null })
    expect(String(rollback.at(-1)?.error_message)).toMatch(/^the image of v1\.0\.0 could not be pulled .*; running now: unknown \(.*\); database: not touched$/)
    expect(hook.received).toHaveLength(1)
    expect(JSON.parse(hook.received[0] ?? '{}').text).toMatch(/^ROLLBACK FAILED on .* \(rollback\.sh from v1\.1\.0\): Rollback to v1\.0\.0 failed: .*Database: not touched\. Look further: /)
    // the recorded release did not move
    expect(JSON.parse(fs.readFileSync(path.join(deployDir, 'artifacts.json'), 'utf8')).current.artifact_id).toBe('v1.1.0')
  })

  it('a deploy refused before anything changed leaves its event, closed failed with the reason', async () => {
    // No application checkout at APP_DIR: refused before the backup, nothing changed.
    const r = await runScript('deploy', ['v1.0.0', '--yes'], env())
    expect(r.code, r.stdout + r.stderr).toBe(1)
    const deploys = fs.readFileSync(path.join(logDir, 'deployments.log'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e.artifact_id === 'v1.0.0' && e.event_type === 'deploy' && e.previous_artifact_id === 'v1.1.0')
    expect(deploys.map((e) => e.status)).toEqual(['in_progress', 'failed'])
    const reason = String(deploys.at(-1)?.error_message)
    expect(reason.length).toBeGreaterThan(0)
    expect(r.stderr).toContain(`ERROR: ${reason.split('\n')[0]}`)
  })
})
