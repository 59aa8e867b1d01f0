import fs from 'node:fs'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readLog } from '../support/scripts.ts'
import { BOT_TOKEN, DB, createStack, exec, stackChecksums, type Stack } from '../support/stack.ts'

// The production compose file on a real Docker Engine (Compose v2) with the fixture bot v1.0.0.
let stack: Stack

beforeAll(async () => {
  stack = createStack('v2')
  await stack.up('v1.0.0')
})
afterAll(async () => stack?.down())

describe('health-check on a running stack', () => {
  it('a healthy stack: exit 0, the contract lines, and the contract JSON alone on stdout', async () => {
    const text = await stack.script('health-check', [])
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(/INFO: Checking service health\n.*INFO: bot: healthy \(response: \d+ms\)\n.*INFO: postgres: healthy \(response: \d+ms\)\n.*INFO: redis: healthy \(response: \d+ms\)\n.*INFO: nginx: not deployed \(.*\)\n.*INFO: All services healthy/)
    const json = await stack.script('health-check', ['--json'])
    expect(json.code).toBe(0)
    const report = JSON.parse(json.stdout)
    expect(report).toMatchObject({ overall_status: 'healthy', services: { bot: { status: 'healthy' }, postgres: { status: 'healthy' }, redis: { status: 'healthy' } } })
    expect(report.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    for (const name of ['bot', 'postgres', 'redis']) expect(typeof report.services[name].response_time_ms).toBe('number')
    expect(report.services.nginx).toMatchObject({ status: 'not_deployed', response_time_ms: null })
    expect(report.services.bot.version).toBe('v1.0.0')
  })

  it('redis stopped: bot degraded, redis unhealthy, exit 1 (the contract\'s "Some Unhealthy")', async () => {
    await stack.compose(['stop', 'redis'])
    try {
      // The bot notices on its next /health call; give its redis timeout a moment.
      let result = await stack.script('health-check', [])
      for (let i = 0; i < 5 && !/bot: degraded/.test(result.stdout); i++) result = await stack.script('health-check', [])
      expect(result.code).toBe(1)
      expect(result.stdout).toMatch(/INFO: bot: degraded \(redis connection failed\)/)
      expect(result.stdout).toMatch(/INFO: postgres: healthy \(response: \d+ms\)/)
      expect(result.stderr).toMatch(/ERROR: redis: unhealthy \(connection refused: container exited\)/)
      expect(result.stderr).toMatch(/ERROR: Health check failed: 1 unhealthy, 1 degraded/)
      const json = JSON.parse((await stack.script('health-check', ['--json'])).stdout)
      expect(json.overall_status).toBe('unhealthy')
      const only = await stack.script('health-check', ['postgres'])
      expect(only.code).toBe(0)
    } finally {
      await stack.compose(['start', 'redis'])
    }
    expect((await stack.script('health-check', ['--wait', '120'])).code).toBe(0)
  })

  it('a hung bot (no heartbeat, /health silent): unhealthy with exit 2, the contract\'s timeout', async () => {
    await stack.compose(['exec', '-T', 'bot', 'touch', '/tmp/hang'])
    try {
      const result = await stack.script('health-check', ['bot'])
      expect(result.code).toBe(2)
      expect(result.stderr).toMatch(/ERROR: bot: unhealthy \(timeout: \/health did not answer within the 10s limit\)/)
    } finally {
      await stack.compose(['exec', '-T', 'bot', 'rm', '-f', '/tmp/hang'])
    }
    expect((await stack.script('health-check', ['--wait', '60'])).code).toBe(0)
  })
})

describe('backup and restore in compose mode', () => {
  it('round-trips the stack database; the bot is stopped for the swap and healthy after', async () => {
    const before = await stackChecksums(stack)
    expect(Object.keys(before)).toEqual(expect.arrayContaining(['users', 'businesses', 'offers', 'alembic_version']))
    const backup = await stack.script('backup', ['--json'])
    expect(backup.code).toBe(0)
    const record = JSON.parse(backup.stdout)
    expect(record.database_name).toBe(DB.name)
    expect(record.row_counts['public.users']).toBeGreaterThan(0)

    await stack.psql(`DELETE FROM offers; UPDATE users SET username = 'clobbered'`)
    const botBefore = await containerStartedAt(stack, 'bot')
    const restore = await stack.script('restore', [record.backup_id, '--yes'], { KEY_TABLES: 'users,businesses' })
    expect(restore.stderr).toBe('')
    expect(restore.code).toBe(0)
    expect(await stackChecksums(stack)).toEqual(before)
    const info = readLog(stack.env.LOG_FILE!).map((l) => l.replace(/^\[[^\]]+\] /, ''))
    const order = ['INFO: Restoration complete', 'INFO: Stopping application services', 'INFO: Dropping existing database', 'INFO: Restarting services', 'INFO: Services started', 'INFO: Health checks passed', 'INFO: Restore successful']
    const positions = order.map((line) => info.lastIndexOf(line))
    expect(positions.every((p) => p >= 0)).toBe(true)
    expect([...positions].sort((a, b) => a - b)).toEqual(positions)
    expect(await containerStartedAt(stack, 'bot')).not.toBe(botBefore)
    expect((await stack.script('health-check', [])).code).toBe(0)
    const log = fs.readFileSync(stack.env.LOG_FILE!, 'utf8')
    for (const secret of [DB.password, BOT_TOKEN, 'sk_test_e2e_key']) expect(log).not.toContain(secret)
  })
})

async function containerStartedAt(stack: Stack, service: string): Promise<string> {
  const ids = await exec(['docker', 'ps', '-q', '--filter', `label=com.docker.compose.project=${stack.project}`, '--filter', `label=com.docker.compose.service=${service}`])
  return (await exec(['docker', 'inspect', '--format', '{{.State.StartedAt}}', ids.stdout.trim()])).stdout.trim()
}
