import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ROOT } from '../support/scripts.ts'
import { createStack, exec, type Stack } from '../support/stack.ts'

// Stops the Docker daemon itself; e2e files run one at a time, so no other file's stack is up
// meanwhile. The stack must come back by itself (restart: unless-stopped) and `health-check --wait` must see it healthy within 5
// minutes, as the task plan's post-boot check does.
let stack: Stack

beforeAll(async () => {
  stack = createStack('v2')
  await stack.up('v1.0.0')
})
afterAll(async () => stack?.down())

describe('after dockerd restarts', () => {
  it('the stack comes back by itself and health-check --wait exits 0 within 5 minutes', async () => {
    stopDockerd()
    expect((await exec(['docker', 'info'])).code).not.toBe(0)
    const start = spawnSync('bash', [path.join(ROOT, 'test/e2e/bed/provision.sh')], { stdio: 'inherit' })
    expect(start.status).toBe(0)
    const started = Date.now()
    const waited = await stack.script('health-check', ['--wait', '300'])
    expect(waited.stdout).toContain('All services healthy')
    expect(waited.code).toBe(0)
    expect(Date.now() - started).toBeLessThan(300_000)
  })
})

function stopDockerd(): void {
  const pidFile = '/var/cache/ttg-e2e/dockerd.pid'
  const pid = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8')) : Number(spawnSync('pgrep', ['-xo', 'dockerd'], { encoding: 'utf8' }).stdout.trim())
  if (!pid) throw new Error('no running dockerd found to restart')
  process.kill(pid, 'SIGTERM')
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0)
    } catch {
      return
    }
    spawnSync('sleep', ['0.5'])
  }
  throw new Error(`dockerd (pid ${pid}) did not stop within 60s`)
}
