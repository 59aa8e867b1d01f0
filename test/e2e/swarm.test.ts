import fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBotApi, type BotApiStandIn } from '../support/bot-api.ts'
import { readLog, runScript, tempDir, urlModeEnv, type ScriptResult } from '../support/scripts.ts'
import { bedEnv, exec } from '../support/stack.ts'
import { ensureSwarmNodes, type SwarmNodes } from '../support/swarm-nodes.ts'

// The same commands on a Docker Swarm of three engines (test/support/swarm-nodes.ts):
// ORCHESTRATOR=swarm, the toolkit on the host driving the manager through DOCKER_HOST, the
// fixture bot in webhook mode with three replicas behind nginx, a "managed" PostgreSQL beside the
// nodes (DB_MODE=url), 50 signed updates a second through nginx while it deploys, fails, rolls
// back and loses a node.
//
// What the bed cannot show: no ip_vs module here, so neither a service's virtual IP nor the
// ingress routing mesh works. The stack runs with endpoint_mode dnsrr (nginx resolves the bot's
// tasks by DNS) and nginx's ports published in host mode on the ingress node; production keeps
// Swarm's defaults (VIP, routing mesh), which this test does not exercise.
const STACK = 'ttgswarmstack'
const SECRET = 'e2e_webhook_secret'
const DB = { name: 'toogoodtogo', user: 'toogoodtogo', password: 'e2ePassw0rdX' }
const DB_CONTAINER = 'ttgswarm-db'
const RATE = 50

let swarm: SwarmNodes
let api: BotApiStandIn
let work: string
let env: Record<string, string>
let webhookUrl: string

beforeAll(async () => {
  const bed = bedEnv()
  const images = ['v1.0.0', 'v1.1.0', 'v1.2.0', 'v1.3.0'].map((t) => `${bed.BOT_IMAGE}:${t}`)
  swarm = await ensureSwarmNodes({ images: [...images, bed.NGINX_IMAGE ?? '', bed.REDIS_IMAGE ?? ''] })
  const { manager } = swarm
  await manager.docker(['stack', 'rm', STACK])
  await waitUntil(async () => (await manager.docker(['network', 'ls', '-q', '--filter', `name=${STACK}_`])).stdout.trim() === '', 60_000)
  must(await manager.docker(['node', 'update', '--label-add', 'ttg.data=true', '--label-add', 'ttg.ingress=true', manager.name]), 'labelling the manager')
  // nginx's certificate and certbot's webroot on the ingress node, where its bind mounts resolve
  must(await exec(['docker', 'exec', manager.container, 'sh', '-c', 'mkdir -p /etc/letsencrypt/live/localhost /var/www/certbot && cd /etc/letsencrypt/live/localhost && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -keyout privkey.pem -out fullchain.pem 2>/dev/null']), 'certificate on the ingress node')

  // The managed database: a PostgreSQL beside the nodes, reached by URL from the host and the tasks.
  await exec(['docker', 'rm', '-f', '-v', DB_CONTAINER])
  must(await exec(['docker', 'run', '--detach', '--name', DB_CONTAINER, '--label', `com.docker.compose.project=${swarm.prefix}`, '--network', swarm.network,
    '-e', `POSTGRES_DB=${DB.name}`, '-e', `POSTGRES_USER=${DB.user}`, '-e', `POSTGRES_PASSWORD=${DB.password}`, bed.POSTGRES_IMAGE ?? '']), 'starting the database')
  const dbIp = (await exec(['docker', 'inspect', '--format', `{{(index .NetworkSettings.Networks "${swarm.network}").IPAddress}}`, DB_CONTAINER])).stdout.trim()
  const databaseUrl = `postgresql://${DB.user}:${DB.password}@${dbIp}:5432/${DB.name}`
  await waitUntil(async () => (await exec(['pg_isready', '-h', dbIp, '-U', DB.user, '-d', DB.name])).code === 0 && (await psql('SELECT 1').catch(() => '')) === '1', 60_000)

  api = await startBotApi('127.0.0.1')
  work = tempDir('ttg-swarm-')
  const appDir = path.join(work, 'app')
  must(await exec(['git', 'clone', '--quiet', bed.APP_REPO ?? '', appDir]), 'cloning the app')
  const envFile = path.join(work, '.env.production')
  fs.writeFileSync(envFile, [
    'ENVIRONMENT=production', 'LOG_LEVEL=INFO', `BOT_IMAGE=${bed.BOT_IMAGE}`, 'APP_VERSION=v1.0.0',
    'TELEGRAM_BOT_TOKEN=123456:E2E-secret_token', 'TELEGRAM_WEBHOOK_URL=https://bot.example.com/webhook', `TELEGRAM_WEBHOOK_SECRET=${SECRET}`,
    `POSTGRES_DB=${DB.name}`, `POSTGRES_USER=${DB.user}`, `DATABASE_URL=${databaseUrl}`, 'REDIS_URL=redis://redis:6379/0',
    'STRIPE_API_KEY=sk_test_e2e_key', `NGINX_IMAGE=${bed.NGINX_IMAGE}`, `REDIS_IMAGE=${bed.REDIS_IMAGE}`, 'DOMAIN=bot.example.com', `POSTGRES_PASSWORD=${DB.password}`,
    'BOT_REPLICAS=3', 'SWARM_ENDPOINT_MODE=dnsrr', 'SWARM_PUBLISH_MODE=host', 'NGINX_HTTP_PORT=80', 'NGINX_HTTPS_PORT=443',
    '',
  ].join('\n'), { mode: 0o600 })
  env = {
    ...urlModeEnv(databaseUrl, work),
    ORCHESTRATOR: 'swarm',
    DOCKER_HOST: manager.dockerHost,
    ENV_FILE: envFile,
    COMPOSE_PROJECT_NAME: STACK,
    APP_DIR: appDir,
    TELEGRAM_API_BASE: api.base,
    HEALTH_CHECK_TIMEOUT: '120',
    WATCH_SECONDS: '0',
    // nginx's certificate is for localhost; .env.production's DOMAIN (webhook mode needs one) is the public name
    DOMAIN: 'localhost',
  }
  webhookUrl = `https://${manager.ip}:443/webhook`
})

afterAll(async () => {
  await api?.close()
  if (process.env.TTG_KEEP_STACK) return console.log(`kept ${work} (stack ${STACK} on ${swarm?.manager.dockerHost})`)
  // Every node back, for the next run's fixture: one may have been killed.
  for (const n of swarm?.nodes ?? []) if ((await exec(['docker', 'inspect', '--format', '{{.State.Running}}', n.container])).stdout.trim() !== 'true') await n.start()
  await swarm?.manager.docker(['stack', 'rm', STACK])
  await exec(['docker', 'rm', '-f', '-v', DB_CONTAINER])
})

describe('the same commands on a Docker Swarm', () => {
  it('1. first deploy: migrations as a one-off task, the stack created, three healthy replicas on three nodes behind nginx', async () => {
    const r = await deploy('v1.0.0')
    expect(r.code, output(r)).toBe(0)
    expect(r.stdout).toMatch(/INFO: Running database migrations\n[\s\S]*INFO: Migrations applied successfully\n[\s\S]*INFO: All services healthy\n[\s\S]*INFO: Deployment successful: v1.0.0/)
    expect(await psql('SELECT version_num FROM alembic_version')).toBe('0001')
    const tasks = await botTasks()
    expect(tasks.map((t) => t.image)).toEqual(Array(3).fill('v1.0.0'))
    expect(new Set(tasks.map((t) => t.node)).size).toBe(3)
    // the token and the database URL are secrets: not in the service's spec
    const spec = (await swarm.manager.docker(['service', 'inspect', `${STACK}_bot`])).stdout
    expect(spec).not.toContain('E2E-secret_token')
    expect(spec).not.toContain(DB.password)
    expect((await post(1)).status).toBe(200)
    expect(api.webhook).toMatchObject({ url: 'https://bot.example.com/webhook', secret: SECRET })
    expect(lastEvent()).toMatchObject({ event_type: 'deploy', artifact_id: 'v1.0.0', status: 'success' })
  })

  it(`2. deploy under ${RATE} signed updates/s: Swarm's start-first update, 0 failed webhook requests`, async () => {
    const load = startLoad(1000)
    const r = await deploy('v1.1.0')
    const summary = await load.stop()
    expect(r.code, output(r)).toBe(0)
    expect(r.stdout).toContain('INFO: Services started (downtime 0.0s)')
    expect((await botTasks()).map((t) => t.image)).toEqual(Array(3).fill('v1.1.0'))
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
    expect((await botTasks()).map((t) => t.image)).toEqual(Array(3).fill('v1.1.0'))
    // v1.3.0's 0004 added offers.currency: the restore took it away again, the rows are intact
    expect(await psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'offers' AND column_name = 'currency'")).toBe('0')
    expect(await psql('SELECT version_num FROM alembic_version')).toBe('0002')
    expect(await psql('SELECT string_agg(price_cents::text, \',\' ORDER BY id) FROM offers')).toBe(before)
    const events = readEvents()
    expect(events.find((e) => e.event_type === 'deploy' && e.artifact_id === 'v1.3.0' && e.status !== 'in_progress')).toMatchObject({ status: 'rolled_back' })
    expect(events.find((e) => e.event_type === 'rollback' && e.artifact_id === 'v1.1.0' && e.triggered_by === 'automated')).toMatchObject({ status: 'success' })
    // Telegram retries what failed: every update gets through
    expect(summary.lost).toEqual([])
  })

  it('4. a deploy whose migration fails: the old version never stopped serving, the database is restored (exit 3)', async () => {
    const before = await psql('SELECT string_agg(price_cents::text, \',\' ORDER BY id) FROM offers')
    const r = await deploy('v1.2.0')
    expect(r.code, output(r)).toBe(3)
    expect(r.stdout + r.stderr).toMatch(/ERROR: Migration failed: .*currencies/)
    expect(await psql('SELECT string_agg(price_cents::text, \',\' ORDER BY id) FROM offers')).toBe(before)
    expect(await psql('SELECT version_num FROM alembic_version')).toBe('0002')
    expect((await botTasks()).map((t) => t.image)).toEqual(Array(3).fill('v1.1.0'))
  })

  it('5. rollback to v1.0.0: the database, ahead of it, is restored from its pre-deployment backup; the stack runs v1.0.0', async () => {
    const r = await runScript('rollback', ['v1.0.0', '--yes'], env)
    expect(r.code, output(r)).toBe(0)
    expect(r.stdout).toContain('INFO: Rollback successful: v1.0.0')
    expect(await psql('SELECT version_num FROM alembic_version')).toBe('0001')
    expect((await botTasks()).map((t) => t.image)).toEqual(Array(3).fill('v1.0.0'))
    expect(JSON.parse(fs.readFileSync(path.join(work, 'artifacts.json'), 'utf8')).current.artifact_id).toBe('v1.0.0')
  })

  it(`6. a node killed under ${RATE} updates/s: its task is rescheduled on the others, every update is received (Telegram's retries counted)`, async () => {
    const victim = swarm.nodes[2]
    if (!victim) throw new Error('three nodes expected')
    const load = startLoad(100_000)
    await sleep(3000)
    await victim.kill()
    await waitUntil(async () => {
      const tasks = await botTasks()
      return tasks.length === 3 && tasks.every((t) => t.node !== victim.name)
    }, 120_000)
    await sleep(3000)
    const summary = await load.stop()
    const tasks = await botTasks()
    expect(new Set(tasks.map((t) => t.node))).not.toContain(victim.name)
    expect(summary.lost).toEqual([])
    console.log(`node kill: ${summary.sent} updates, ${summary.failedFirstTry} retried by "Telegram", ${summary.retries} retries in all, none lost`)
    await victim.start()
  })
})

// ---- helpers -------------------------------------------------------------------------------------

function deploy(tag: string): Promise<ScriptResult> {
  return runScript('deploy', [tag, '--yes'], env)
}

function output(r: ScriptResult): string {
  return `${r.stdout}\n${r.stderr}`
}

async function psql(sql: string): Promise<string> {
  const ip = (await exec(['docker', 'inspect', '--format', `{{(index .NetworkSettings.Networks "${swarm.network}").IPAddress}}`, DB_CONTAINER])).stdout.trim()
  const r = await exec(['psql', '-h', ip, '-U', DB.user, '-d', DB.name, '-Atc', sql], { PGPASSWORD: DB.password })
  if (r.code !== 0) throw new Error(`psql failed: ${r.stderr}`)
  return r.stdout.trim()
}

async function botTasks(): Promise<{ image: string; node: string }[]> {
  const r = await swarm.manager.docker(['service', 'ps', '--filter', 'desired-state=running', '--format', '{{.Image}}|{{.Node}}|{{.CurrentState}}', `${STACK}_bot`])
  return r.stdout.trim().split('\n').filter((l) => l.includes('|Running')).map((l) => {
    const [image = '', node = ''] = l.split('|')
    return { image: image.split(':').pop() ?? '', node }
  })
}

interface AuditEvent { event_type: string; artifact_id: string; status: string; triggered_by: string }

function readEvents(): AuditEvent[] {
  return readLog(path.join(work, 'deployments.log')).filter(Boolean).map((l) => JSON.parse(l) as AuditEvent)
}

function lastEvent(): AuditEvent | undefined {
  return readEvents().at(-1)
}

let nextUpdateId = 1000

function post(updateId: number): Promise<{ status: number | string }> {
  const body = JSON.stringify({ update_id: updateId, message: { message_id: updateId, date: Math.floor(Date.now() / 1000), chat: { id: 4242, type: 'private' }, text: `load ${updateId}` } })
  return new Promise((resolve) => {
    const req = https.request(webhookUrl, { method: 'POST', rejectUnauthorized: false, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-telegram-bot-api-secret-token': SECRET } }, (res) => {
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

function must(r: ScriptResult, what: string): ScriptResult {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${r.stderr || r.stdout}`)
  return r
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting')
    await sleep(500)
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
