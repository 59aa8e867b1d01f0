import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startHookServer, type HookServer } from '../support/hook.ts'
import { tempDir } from '../support/scripts.ts'
import { stopAfterFirstFailure } from '../support/sequence.ts'
import { bedEnv, createStack, exec, type Stack } from '../support/stack.ts'

// rollback.sh's failure path on the real stack: a target whose image is gone from the registry and
// from this host, and a target that never turns healthy. Each time the operator is told, in the log
// and in the notification, which version runs now, what happened to the database and the one
// command to look further; the rollback's event is closed `failed`, never left `in_progress`.
//
// The releases live in a repository of this test's own in the bed's registry (copies of the
// fixture images), so that deleting one there, or replacing it, touches no other test.
let stack: Stack
let hook: HookServer
let env: Record<string, string>
const bed = bedEnv()
const repoName = `ttg-e2e-rollback-${Date.now().toString(36)}`
const repo = `${bed.REGISTRY}/${repoName}`

async function must(argv: string[]): Promise<string> {
  const r = await exec(argv)
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr}`)
  return r.stdout
}

/** The image `tag` in this test's repository, built on the bed's release `tag`. */
async function publish(tag: string, dockerfile: string): Promise<void> {
  await must(['docker', 'pull', '--quiet', `${bed.BOT_IMAGE}:${tag}`])
  const dir = tempDir('ttg-e2e-image-')
  fs.writeFileSync(path.join(dir, 'Dockerfile'), dockerfile)
  await must(['docker', 'build', '--quiet', '--tag', `${repo}:${tag}`, dir])
  await must(['docker', 'push', '--quiet', `${repo}:${tag}`])
  // Only the registry holds it: the deploys under test pull for real.
  await must(['docker', 'rmi', `${repo}:${tag}`])
  fs.rmSync(dir, { recursive: true, force: true })
}

async function deleteFromRegistry(tag: string): Promise<void> {
  const head = await must(['curl', '-fsSI', '-H', 'Accept: application/vnd.docker.distribution.manifest.v2+json', `http://${bed.REGISTRY}/v2/${repoName}/manifests/${tag}`])
  const digest = /^docker-content-digest:\s*(sha256:[0-9a-f]{64})/im.exec(head)?.[1]
  if (!digest) throw new Error(`no digest for ${repo}:${tag} in: ${head}`)
  await must(['curl', '-fsS', '-X', 'DELETE', `http://${bed.REGISTRY}/v2/${repoName}/manifests/${digest}`])
}

beforeAll(async () => {
  hook = await startHookServer()
  for (const tag of ['v1.0.0', 'v1.1.0']) await publish(tag, `FROM ${bed.BOT_IMAGE}:${tag}\n`)
  stack = createStack('v2')
  const envFile = stack.env.ENV_FILE ?? ''
  fs.writeFileSync(envFile, fs.readFileSync(envFile, 'utf8').replace(/^BOT_IMAGE=.*$/m, `BOT_IMAGE=${repo}`))
  const appDir = path.join(stack.dir, 'app')
  await must(['git', 'clone', '--quiet', bed.APP_REPO ?? '', appDir])
  env = { APP_DIR: appDir, HEALTH_CHECK_TIMEOUT: '40', NOTIFY_WEBHOOK_URL: hook.url }
  for (const tag of ['v1.0.0', 'v1.1.0']) {
    const r = await stack.script('deploy', [tag, '--yes'], env)
    if (r.code !== 0) throw new Error(r.stdout + r.stderr)
  }
}, 900_000)

afterAll(async () => {
  await stack?.down()
  hook?.close()
  for (const tag of ['v1.0.0', 'v1.1.0']) {
    await deleteFromRegistry(tag).catch(() => undefined)
    await exec(['docker', 'rmi', '--force', `${repo}:${tag}`])
  }
})

function events(): Record<string, unknown>[] {
  const latest = new Map<string, Record<string, unknown>>()
  for (const line of fs.readFileSync(path.join(stack.dir, 'deployments.log'), 'utf8').trim().split('\n')) {
    const e = JSON.parse(line) as Record<string, unknown>
    latest.set(String(e.event_id), e)
  }
  return [...latest.values()]
}

async function runningVersion(): Promise<string> {
  return JSON.parse((await stack.script('health-check', ['--json', 'bot'], env)).stdout).services.bot.version
}

const LOOK = 'Look further: .*/scripts/status\\.sh'

describe('rollback.sh when the rollback itself fails', () => {
  stopAfterFirstFailure()

  it('1. the target image is gone from the registry and from this host: exit 1, v1.1.0 still serving, database not touched, told so', async () => {
    await deleteFromRegistry('v1.0.0')
    await exec(['docker', 'rmi', '--force', `${repo}:v1.0.0`])
    const before = hook.received.length
    const result = await stack.script('rollback', ['--yes'], env)
    expect(result.code, result.stdout + result.stderr).toBe(1)
    expect(result.stderr).toMatch(new RegExp(`ERROR: Rollback to v1\\.0\\.0 failed: the image of v1\\.0\\.0 could not be pulled \\(nothing was changed\\): [\\s\\S]*\\. Running now: v1\\.1\\.0 \\(bot healthy: .*\\)\\. Database: not touched\\. ${LOOK}`))
    const rollback = events().filter((e) => e.event_type === 'rollback').at(-1)
    expect(rollback).toMatchObject({ artifact_id: 'v1.0.0', previous_artifact_id: 'v1.1.0', status: 'failed', triggered_by: 'manual' })
    expect(String(rollback?.error_message)).toMatch(/running now: v1\.1\.0 \(bot healthy.*; database: not touched$/)
    const told = hook.received.slice(before)
    expect(told).toHaveLength(1)
    expect(told[0]).toMatch(/ROLLBACK FAILED on .*: Rollback to v1\.0\.0 failed: .*Running now: v1\.1\.0 \(bot healthy.*Database: not touched\. Look further: /)
    expect(await runningVersion()).toBe('v1.1.0')
    expect((await stack.script('health-check', [], env)).code).toBe(0)
  })

  it('2. the target never turns healthy: exit 1, the log and the notification say v1.0.0 runs unhealthy on its restored backup', async () => {
    // v1.0.0 again, but a build whose bot hangs from the start (the fixture's hang switch).
    await publish('v1.0.0', `FROM ${bed.BOT_IMAGE}:v1.0.0\nRUN touch /tmp/hang\n`)
    const before = hook.received.length
    const result = await stack.script('rollback', ['--yes'], { ...env, HEALTH_CHECK_TIMEOUT: '25' })
    expect(result.code, result.stdout + result.stderr).toBe(1)
    expect(result.stdout).toMatch(/INFO: Restoring database backup/)
    expect(result.stderr).toMatch(new RegExp(`ERROR: Rollback to v1\\.0\\.0 failed: v1\\.0\\.0 is running but not healthy: .*\\. Running now: v1\\.0\\.0 \\(bot (unhealthy|degraded): .*\\)\\. Database: restored from backup \\S+.*\\. ${LOOK}`))
    const rollback = events().filter((e) => e.event_type === 'rollback').at(-1)
    expect(rollback).toMatchObject({ artifact_id: 'v1.0.0', status: 'failed', backup_created: true })
    expect(events().some((e) => e.status === 'in_progress')).toBe(false)
    const told = hook.received.slice(before)
    expect(told).toHaveLength(1)
    expect(told[0]).toMatch(/ROLLBACK FAILED on .*Running now: v1\.0\.0 \(bot (unhealthy|degraded).*Database: restored from backup \S+/)
    // what the message says is what runs
    expect(await stack.psql('SELECT version_num FROM alembic_version')).toBe('0001')
    // the recorded release is still v1.1.0: the rollback never completed
    expect(JSON.parse(fs.readFileSync(path.join(stack.dir, 'artifacts.json'), 'utf8')).current.artifact_id).toBe('v1.1.0')
  })
})
