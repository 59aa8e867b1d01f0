import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { bedEnv, createStack, exec, stackChecksums, type Stack } from '../support/stack.ts'

// The smoke subset under Compose v1 (docker-compose 1.29, Debian 12's package): container names and
// CLI differ from v2, the scripts must not care.
let stack: Stack

beforeAll(async () => {
  stack = createStack('v1')
  await stack.up('v1.0.0')
})
afterAll(async () => stack?.down())

describe('under Compose v1', () => {
  it('health-check, backup and restore work as under v2', async () => {
    const health = await stack.script('health-check', ['--json'])
    expect(health.code).toBe(0)
    expect(JSON.parse(health.stdout).overall_status).toBe('healthy')
    const before = await stackChecksums(stack)
    const backup = await stack.script('backup', ['--json'])
    expect(backup.code).toBe(0)
    await stack.psql('DELETE FROM offers')
    const restore = await stack.script('restore', [JSON.parse(backup.stdout).backup_id, '--yes'])
    expect(restore.code).toBe(0)
    expect(restore.stdout).toContain('Health checks passed')
    expect(await stackChecksums(stack)).toEqual(before)
  })

  it('deploy v1.0.0 then v1.1.0 (scenario 1 of the deploy tests)', async () => {
    const appDir = path.join(stack.dir, 'app')
    expect((await exec(['git', 'clone', '--quiet', bedEnv().APP_REPO!, appDir])).code).toBe(0)
    const env = { APP_DIR: appDir, HEALTH_CHECK_TIMEOUT: '60' }
    const first = await stack.script('deploy', ['v1.0.0', '--yes', '--force'], env)
    expect(first.code).toBe(0)
    const second = await stack.script('deploy', ['v1.1.0', '--yes'], env)
    expect(second.stderr).toBe('')
    expect(second.code).toBe(0)
    expect(second.stdout).toMatch(/Migrations applied successfully[\s\S]*Services started \(downtime [\d.]+s\)[\s\S]*Deployment successful: v1.1.0/)
    const health = JSON.parse((await stack.script('health-check', ['--json'])).stdout)
    expect(health.services.bot.version).toBe('v1.1.0')
  })
})
