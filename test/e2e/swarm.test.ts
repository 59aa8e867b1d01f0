import fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readLog, type ScriptResult } from '../support/scripts.ts'
import { createSwarmStack, DB, SECRET, waitUntil, type SwarmStack } from '../support/swarm-stack.ts'

// The same commands on a Docker Swarm of three engines (test/support/swarm-stack.ts, which names
// what the bed cannot show: the routing mesh and virtual IPs): the fixture bot in webhook mode
// with three replicas behind nginx, 50 signed updates a second through nginx while the toolkit
// deploys, fails, rolls back, and a node is lost.
const RATE = 50

let stack: SwarmStack

beforeAll(async () => {
  stack = await createSwarmStack()
})

afterAll(async () => {
  if (process.env.TTG_KEEP_STACK) return console.log(`kept ${stack?.work} (stack ${stack?.name} on ${stack?.swarm.manager.dockerHost})`)
  await stack?.destroy()
})

describe('the same commands on a Docker Swarm', () => {
  it('1. first deploy: migrations as a one-off task, the stack created, three healthy replicas on three nodes behind nginx', async () => {
    const r = await deploy('v1.0.0')
    expect(r.code, output(r)).toBe(0)
    expect(r.stdout).toMatch(/INFO: Running database migrations\n[\s\S]*INFO: Migrations applied successfully\n[\s\S]*INFO: All services healthy\n[\s\S]*INFO: Deployment successful: v1.0.0/)
    expect(await psql('SELECT version_num FROM alembic_version')).toBe('0001')
    const tasks = await stack.botTasks()
    expect(tasks.map((t) => t.tag)).toEqual(Array(3).fill('v1.0.0'))
    expect(new Set(tasks.map((t) => t.node)).size).toBe(3)
    // the token and the database URL are secrets: not in the service's spec
    const spec = (await stack.swarm.manager.docker(['service', 'inspect', `${stack.name}_bot`])).stdout
    expect(spec).not.toContain('E2E-secret_token')
    expect(spec).not.toContain(DB.password)
    expect((await post(1)).status).toBe(200)
    expect(stack.api.webhook).toMatchObject({ url: 'https://bot.example.com/webhook', secret: SECRET })
    expect(lastEvent()).toMatchObject({ event_type: 'deploy', artifact_id: 'v1.0.0', status: 'success' })
  })

  it(`2. deploy under ${RATE} signed updates/s: Swarm's start-first update, 0 failed webhook requests`, async () => {
    const load = startLoad(1000)
    const r = await deploy('v1.1.0')
    const summary = await load.stop()
    expect(r.code, output(r)).toBe(0)
    expect(r.stdout).toContain('INFO: Services started (downtime 0.0s)')
    expect((await botTags())).toEqual(Array(3).fill('v1.1.0'))
    expect(await psql('SELECT version_num FROM alembic_version')).toBe('0002')
    expect(summary.sent).toBeGreaterThan(RATE * 20)
    expect(summary.failedFirstTry, JSON.stringify(summary.failures.slice(0, 5))).toBe(0)
    expect(summary.lost).toEqual([])
  })

  it('3. a deploy whose tasks never turn healthy: Swarm rolls the service back, the toolkit restores the database its migration changed', async () => {
    const before = await psql('SELECT string_agg(price_cents::text, \',\' ORDER BY id) FROM offers')
    const load = startLoad(100_000)
    const r = await deploy('v1.3.0')
    const summary = await load.stop()
    expect(r.code, output(r)).toBe(1)
    expect(r.stdout + r.stderr).toMatch(/ERROR: Health checks failed: Swarm rolled the update back/)
    expect(r.stdout).toContain('INFO: Restoring database backup')
    expect(r.stdout).toContain('INFO: Rollback complete')
    expect((await botTags())).toEqual(Array(3).fill('v1.1.0'))
    // v1.3.0's 0004 added offers.currency: the restore took it away again, the rows are intact
    expect(await psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'offers' AND column_name = 'currency'")).toBe('0')
    expect(await psql('SELECT version_num FROM alembic_version')).toBe('0002')
    expect(await psql('SELECT string_agg(price_cents::text, \',\' ORDER BY id) FROM offers')).toBe(before)
    // the audit log has a line per change of an event: its last line says how it ended
    const events = readEvents()
    expect([...events].reverse().find((e) => e.event_type === 'deploy' && e.artifact_id === 'v1.3.0')).toMatchObject({ status: 'rolled_back' })
    expect([...events].reverse().find((e) => e.event_type === 'rollback' && e.artifact_id === 'v1.1.0' && e.triggered_by === 'automated')).toMatchObject({ status: 'success' })
    // Telegram retries what failed: every update gets through
    expect(summary.lost).toEqual([])
  })

  it('4. a deploy whose migration fails: the service is never updated; the database is restored, the bot stopped for the swap as on one host (exit 3)', async () => {
    const before = await psql('SELECT string_agg(price_cents::text, \',\' ORDER BY id) FROM offers')
    const r = await deploy('v1.2.0')
    expect(r.code, output(r)).toBe(3)
    expect(r.stdout + r.stderr).toMatch(/ERROR: Migration failed: .*currencies/)
    expect(await psql('SELECT string_agg(price_cents::text, \',\' ORDER BY id) FROM offers')).toBe(before)
    expect(await psql('SELECT version_num FROM alembic_version')).toBe('0002')
    expect((await botTags())).toEqual(Array(3).fill('v1.1.0'))
  })

  it('5. rollback to v1.0.0: the database, ahead of it, is restored from its pre-deployment backup; the stack runs v1.0.0', async () => {
    const r = await stack.script('rollback', ['v1.0.0', '--yes'])
    expect(r.code, output(r)).toBe(0)
    expect(r.stdout).toContain('INFO: Rollback successful: v1.0.0')
    expect(await psql('SELECT version_num FROM alembic_version')).toBe('0001')
    expect((await botTags())).toEqual(Array(3).fill('v1.0.0'))
    expect(JSON.parse(fs.readFileSync(path.join(stack.work, 'artifacts.json'), 'utf8')).current.artifact_id).toBe('v1.0.0')
  })

  it(`6. a node killed under ${RATE} updates/s: its task is rescheduled on the others, every update is received (Telegram's retries counted)`, async () => {
    const victim = stack.swarm.nodes[2]
    if (!victim) throw new Error('three nodes expected')
    const load = startLoad(100_000)
    await sleep(3000)
    await victim.kill()
    await waitUntil(async () => {
      const tasks = await stack.botTasks()
      return tasks.length === 3 && tasks.every((t) => t.node !== victim.name)
    }, 120_000)
    await sleep(3000)
    const summary = await load.stop()
    const tasks = await stack.botTasks()
    expect(new Set(tasks.map((t) => t.node))).not.toContain(victim.name)
    expect(summary.lost).toEqual([])
    console.log(`node kill: ${summary.sent} updates, ${summary.failedFirstTry} retried by "Telegram", ${summary.retries} retries in all, none lost`)
    await victim.start()
  })
})

// ---- helpers -------------------------------------------------------------------------------------

function deploy(tag: string): Promise<ScriptResult> {
  return stack.script('deploy', [tag, '--yes'])
}

function output(r: ScriptResult): string {
  return `${r.stdout}\n${r.stderr}`
}

const psql = (sql: string) => stack.psql(sql)

async function botTags(): Promise<string[]> {
  return (await stack.botTasks()).map((t) => t.tag)
}

interface AuditEvent { event_type: string; artifact_id: string; status: string; triggered_by: string }

function readEvents(): AuditEvent[] {
  return readLog(path.join(stack.work, 'deployments.log')).filter(Boolean).map((l) => JSON.parse(l) as AuditEvent)
}

function lastEvent(): AuditEvent | undefined {
  return readEvents().at(-1)
}

let nextUpdateId = 1000

function post(updateId: number): Promise<{ status: number | string }> {
  const body = JSON.stringify({ update_id: updateId, message: { message_id: updateId, date: Math.floor(Date.now() / 1000), chat: { id: 4242, type: 'private' }, text: `load ${updateId}` } })
  return new Promise((resolve) => {
    const req = https.request(stack.webhookUrl, { method: 'POST', rejectUnauthorized: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-telegram-bot-api-secret-token': SECRET } }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }))
      res.on('error', (e: NodeJS.ErrnoException) => resolve({ status: e.code ?? e.message }))
    })
    req.setTimeout(30_000, () => req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })))
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: e.code ?? e.message }))
    req.end(body)
  })
}

interface LoadSummary {
  sent: number
  /** updates whose first delivery failed (Telegram would retry them) */
  failedFirstTry: number
  retries: number
  failures: (number | string)[]
  /** update_ids never answered 200, even after Telegram's retries */
  lost: number[]
}

/**
 * RATE signed updates a second through nginx, paced by the clock; an update whose delivery
 * fails is sent again a second later, as Telegram does, for up to a minute.
 */
function startLoad(startAt: number): { stop(): Promise<LoadSummary> } {
  nextUpdateId = Math.max(nextUpdateId, startAt)
  const started = Date.now()
  const pending = new Set<Promise<void>>()
  const summary: LoadSummary = { sent: 0, failedFirstTry: 0, retries: 0, failures: [], lost: [] }
  let stopped = false
  const deliver = async (id: number): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      const { status } = await post(id)
      if (status === 200) return
      if (attempt === 1) {
        summary.failedFirstTry++
        summary.failures.push(status)
      }
      if (attempt >= 60) {
        summary.lost.push(id)
        return
      }
      summary.retries++
      await sleep(1000)
    }
  }
  const timer = setInterval(() => {
    const due = Math.floor(((Date.now() - started) / 1000) * RATE)
    while (!stopped && summary.sent < due) {
      summary.sent++
      const p = deliver(nextUpdateId++)
      pending.add(p)
      void p.finally(() => pending.delete(p))
    }
  }, 5)
  return {
    async stop() {
      stopped = true
      clearInterval(timer)
      await Promise.all([...pending])
      return summary
    },
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
