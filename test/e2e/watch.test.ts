import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { processAlive } from '../../lib/core/lock.ts'
import { startHookServer, type HookServer } from '../support/hook.ts'
import { stopAfterFirstFailure } from '../support/sequence.ts'
import { bedEnv, createStack, exec, type Stack } from '../support/stack.ts'

// The watch window: after deploy returns, a release whose bot turns unhealthy (the fixture's hang
// switch) is rolled back by the detached watcher, recorded and notified; a new deploy ends a watch.
let stack: Stack
let hook: HookServer
let env: Record<string, string>

beforeAll(async () => {
  hook = await startHookServer()
  stack = createStack('v2')
  const appDir = path.join(stack.dir, 'app')
  const clone = await exec(['git', 'clone', '--quiet', bedEnv().APP_REPO ?? '', appDir])
  if (clone.code !== 0) throw new Error(clone.stderr)
  env = { APP_DIR: appDir, HEALTH_CHECK_TIMEOUT: '60', WATCH_SECONDS: '120', NOTIFY_WEBHOOK_URL: hook.url }
  const first = await stack.script('deploy', ['v1.0.0', '--yes'], env)
  if (first.code !== 0) throw new Error(first.stdout + first.stderr)
}, 600_000)

afterAll(async () => {
  await stack?.down()
  hook?.close()
})

const deploy = (args: string[]) => stack.script('deploy', [...args, '--yes'], env)
const events = async () => {
  const latest = new Map<string, Record<string, unknown>>()
  for (const line of (await exec(['cat', stack.env.AUDIT_LOG ?? path.join(stack.dir, 'deployments.log')])).stdout.split('\n').filter(Boolean)) {
    const e = JSON.parse(line) as Record<string, unknown>
    latest.set(String(e.event_id), e)
  }
  return [...latest.values()]
}
const watchFile = () => exec(['cat', path.join(stack.dir, 'watch.json')])

describe('the watch window after a switch', () => {
  stopAfterFirstFailure()

  it('1. a release that turns unhealthy after the gate is rolled back by the watch, recorded as rolled_back with the reason, and notified', async () => {
    const r = await deploy(['v1.1.0'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toMatch(/INFO: Watching v1\.1\.0 for 120s \(WATCH_SECONDS\): it is rolled back to v1\.0\.0 if the bot turns unhealthy \(watcher pid \d+\)/)
    const watcher = JSON.parse((await watchFile()).stdout) as { pid: number }
    expect(processAlive(watcher.pid)).toBe(true)
    // healthy for a while after the gate, then it falls over
    await new Promise((res) => setTimeout(res, 10_000))
    expect((await stack.compose(['exec', '-T', 'bot', 'touch', '/tmp/hang'])).code).toBe(0)
    let deployEvent: Record<string, unknown> | undefined
    for (let i = 0; i < 60; i++) {
      deployEvent = (await events()).find((e) => e.event_type === 'deploy' && e.artifact_id === 'v1.1.0')
      if (deployEvent?.status === 'rolled_back') break
      await new Promise((res) => setTimeout(res, 2000))
    }
    expect(deployEvent?.status).toBe('rolled_back')
    expect(String(deployEvent?.error_message)).toMatch(/^watch: the bot turned unhealthy \d+s after the switch: bot: unhealthy .*; rolled back to v1\.0\.0$/)
    // the watcher's rollback: an automated event of its own, linked to the deploy it undid
    const rollback = (await events()).find((e) => e.event_type === 'rollback' && e.rollback_of === deployEvent?.event_id)
    expect(rollback).toMatchObject({ artifact_id: 'v1.0.0', previous_artifact_id: 'v1.1.0', triggered_by: 'automated', status: 'success' })
    // the schema v1.1.0 added is gone again: the pre-deployment backup was restored
    expect(await stack.psql('SELECT version_num FROM alembic_version')).toBe('0001')
    const health = await stack.script('health-check', ['bot', '--json'], env)
    expect(JSON.parse(health.stdout).services.bot.version).toBe('v1.0.0')
    // told once: the watcher's line, not also the rollback's own "Rolled back to"
    expect(hook.received.filter((n) => n.includes('Watch: v1.1.0 the bot turned unhealthy'))).toHaveLength(1)
    expect(hook.received.some((n) => n.includes('Rolled back to v1.0.0'))).toBe(false)
    expect((await watchFile()).code).not.toBe(0)
    for (let i = 0; i < 20 && processAlive(watcher.pid); i++) await new Promise((res) => setTimeout(res, 500))
    expect(processAlive(watcher.pid)).toBe(false)
  })

  it('2. a deploy started during a watch ends the watch first', async () => {
    const first = await deploy(['v1.1.0'])
    expect(first.code, first.stdout + first.stderr).toBe(0)
    const watcher = JSON.parse((await watchFile()).stdout) as { pid: number }
    expect(processAlive(watcher.pid)).toBe(true)
    const second = await deploy(['v1.1.0', '--force'])
    expect(second.code, second.stdout + second.stderr).toBe(0)
    expect(second.stdout).toContain('INFO: Ended the watch of v1.1.0 (a new deploy of v1.1.0)')
    expect(processAlive(watcher.pid)).toBe(false)
    // the new deploy watches in its turn; a rollback ends that one
    const next = JSON.parse((await watchFile()).stdout) as { pid: number }
    expect(next.pid).not.toBe(watcher.pid)
    const back = await stack.script('rollback', ['--yes'], env)
    expect(back.code, back.stdout + back.stderr).toBe(0)
    expect(back.stdout).toMatch(/INFO: Ended the watch of v1\.1\.0 \(a rollback\)/)
    expect(processAlive(next.pid)).toBe(false)
  })
})
