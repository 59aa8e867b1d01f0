import fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { formatSummary, startLoad, summarize } from '../../bench/webhook.ts'
import { startBotApi, type BotApiStandIn } from '../support/bot-api.ts'
import { freePort } from '../support/droplet.ts'
import { bridgeGateway } from '../support/pitr-stack.ts'
import { waitFor } from '../support/scripts.ts'
import { BOT_TOKEN, bedEnv, createStack, exec, stackChecksums, type Stack } from '../support/stack.ts'

// Webhook mode on its own stack: nginx with TLS (a self-signed certificate) in front of the fixture
// bot, and a stand-in of the Bot API (test/support/bot-api.ts) for the webhook's registration and
// the bot's getUpdates. The stack starts in polling mode and is switched to webhook mode; then the
// rate limits by secret token, blue-green deploys, a rollback and a failed deploy under a steady
// load of signed updates (none may fail), the registration, and the switch back to polling mode.
const SECRET = 'e2e_webhook_secret' // the stack's TELEGRAM_WEBHOOK_SECRET (test/support/stack.ts)
const HOOK = 'https://bot.example.com/webhook'
let stack: Stack
let env: Record<string, string>
let url: string
let api: BotApiStandIn

beforeAll(async () => {
  // On the docker bridge's gateway: the bot's getUpdates comes from inside its container.
  api = await startBotApi(await bridgeGateway())
  // Compose v2 by default (droplets have it); TTG_E2E_COMPOSE=v1 runs the same with Debian 12's v1.
  stack = createStack(process.env.TTG_E2E_COMPOSE === 'v1' ? 'v1' : 'v2')
  // The bot reads it from its env file (the scripts from their environment, below).
  fs.appendFileSync(envFile(), `TELEGRAM_API_BASE=${api.base}\n`)
  const appDir = path.join(stack.dir, 'app')
  const clone = await exec(['git', 'clone', '--quiet', bedEnv().APP_REPO ?? '', appDir])
  if (clone.code !== 0) throw new Error(clone.stderr)
  const certs = path.join(stack.dir, 'letsencrypt')
  fs.mkdirSync(path.join(certs, 'live', 'localhost'), { recursive: true })
  const cert = await exec(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-keyout', path.join(certs, 'live/localhost/privkey.pem'), '-out', path.join(certs, 'live/localhost/fullchain.pem')])
  if (cert.code !== 0) throw new Error(cert.stderr)
  const httpsPort = await freePort()
  url = `https://127.0.0.1:${httpsPort}/webhook`
  env = {
    APP_DIR: appDir,
    HEALTH_CHECK_TIMEOUT: '60',
    TELEGRAM_API_BASE: api.base,
    LETSENCRYPT_DIR: certs,
    CERTBOT_WEBROOT: path.join(stack.dir, 'webroot'),
    // nginx's certificate is for localhost; .env.production's DOMAIN (webhook mode needs one) is the public name
    DOMAIN: 'localhost',
    NGINX_HTTP_PORT: `127.0.0.1:${await freePort()}`,
    NGINX_HTTPS_PORT: `127.0.0.1:${httpsPort}`,
  }
  // Polling mode first: test 0 switches the stack to webhook mode.
  const first = await stack.script('deploy', ['v1.0.0', '--yes'], env)
  if (first.code !== 0) throw new Error(`first deploy failed:\n${first.stdout}\n${first.stderr}`)
})
afterAll(async () => {
  await api?.close()
  if (process.env.TTG_KEEP_STACK) return console.log(`kept ${stack.dir} (project ${stack.project})`)
  await stack?.compose(['--profile', 'webhook', 'rm', '--stop', '--force', 'nginx'], env)
  await stack?.down()
})

function envFile(): string {
  return stack.env.ENV_FILE ?? ''
}

/** .env.production with TELEGRAM_WEBHOOK_URL (and DOMAIN) as the operator edits them to switch modes. */
function setWebhookUrl(value: string): void {
  const text = fs.readFileSync(envFile(), 'utf8').replace(/^TELEGRAM_WEBHOOK_URL=.*$/m, `TELEGRAM_WEBHOOK_URL=${value}`)
  fs.writeFileSync(envFile(), /^DOMAIN=/m.test(text) ? text : `${text}DOMAIN=bot.example.com\n`, { mode: 0o600 })
}

/** What the running bot logged when it started: its mode, as the real bot picks it. */
async function botMode(): Promise<string> {
  const [bot] = await containers('bot')
  const logs = await exec(['docker', 'logs', bot ?? ''])
  const started = (logs.stdout + logs.stderr).split('\n').filter((l) => l.includes('"bot started"')).pop() ?? '{}'
  return String((JSON.parse(started) as { mode?: unknown }).mode)
}

const deploy = (args: string[]) => stack.script('deploy', [...args, '--yes'], env)
const rollback = (args: string[]) => stack.script('rollback', [...args, '--yes'], env)

/** One POST through nginx over TLS; the status, or the error code. */
function post(headers: Record<string, string>, agent: https.Agent): Promise<number | string> {
  return new Promise((resolve) => {
    const req = https.request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', ...headers } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message))
    req.end('{"update_id":1}')
  })
}

/** `n` requests as fast as `concurrency` connections allow, counted by outcome. */
async function burst(n: number, headers: Record<string, string>, concurrency = 20): Promise<Record<string, number>> {
  const agent = new https.Agent({ keepAlive: true, maxSockets: concurrency, rejectUnauthorized: false })
  const outcomes = await Promise.all(Array.from({ length: n }, () => post(headers, agent)))
  agent.destroy()
  const counts: Record<string, number> = {}
  for (const o of outcomes) counts[String(o)] = (counts[String(o)] ?? 0) + 1
  return counts
}

async function containers(service: string): Promise<string[]> {
  return (await exec(['docker', 'ps', '-q', '--filter', `label=com.docker.compose.project=${stack.project}`, '--filter', `label=com.docker.compose.service=${service}`])).stdout.trim().split('\n').filter(Boolean)
}

async function runningVersion(): Promise<string> {
  return JSON.parse((await stack.script('health-check', ['--json', 'bot'], env)).stdout).services.bot.version
}

function events(): Record<string, unknown>[] {
  const latest = new Map<string, Record<string, unknown>>()
  for (const line of fs.readFileSync(path.join(stack.dir, 'deployments.log'), 'utf8').trim().split('\n')) {
    const e = JSON.parse(line)
    latest.set(e.event_id, e)
  }
  return [...latest.values()]
}

describe('polling to webhook mode', () => {
  it('0. TELEGRAM_WEBHOOK_URL set, then the running tag deployed: the poller stops first, nginx starts, the webhook is set with its secret; rows intact', async () => {
    // The poller polls, and Telegram lets it: no webhook is set.
    await waitFor(() => api.callsOf('getUpdates').some((c) => c.status === 200), 30_000)
    expect(await botMode()).toBe('polling')
    const rows = await stackChecksums(stack)
    setWebhookUrl(HOOK)
    // The tag already running, without --force: the switch is reason enough.
    const result = await deploy(['v1.0.0'])
    expect(result.code, result.stdout + result.stderr).toBe(0)
    expect(result.stdout).toContain(`INFO: The running bot is in polling mode and ${envFile()} says webhook mode: this deploy switches modes`)
    expect(result.stdout).toMatch(/INFO: Switching from polling to webhook mode[^\n]*\n[\s\S]*INFO: Services started \(downtime [\d.]+s\)[\s\S]*INFO: All services healthy\n[\s\S]*INFO: Telegram webhook set to TELEGRAM_WEBHOOK_URL/)
    expect(result.stdout).not.toContain('blue-green')
    expect(events().at(-1)).toMatchObject({ artifact_id: 'v1.0.0', status: 'success', downtime_seconds: expect.any(Number) })
    expect(api.callsOf('setWebhook').map((c) => c.body)).toEqual([{ url: HOOK, secret_token: SECRET }])
    expect(api.callsOf('deleteWebhook')).toEqual([])
    expect(await containers('nginx')).toHaveLength(1)
    expect(await containers('bot')).toHaveLength(1)
    expect(await botMode()).toBe('webhook')
    // A signed update through nginx reaches the bot, which polls no more.
    const polled = api.callsOf('getUpdates').length
    expect(await burst(1, { 'x-telegram-bot-api-secret-token': SECRET })).toEqual({ 200: 1 })
    const [nginx] = await containers('nginx')
    const access = await exec(['docker', 'logs', nginx ?? ''])
    expect((access.stdout + access.stderr).split('\n').filter((l) => l.includes('"POST /webhook')).pop()).toMatch(/ 200 \d+ .*upstream=[\d.]+:8080$/)
    await new Promise((r) => setTimeout(r, 3000))
    expect(api.callsOf('getUpdates')).toHaveLength(polled)
    expect(await stackChecksums(stack)).toEqual(rows)
    expect((await stack.script('health-check', [], env)).code).toBe(0)
  })
})

describe('nginx in webhook mode', () => {
  it('1. signed requests are never rate limited; without the secret: 403 (429 over the limit), and never sent to the bot', async () => {
    // 300 at once is five times the burst of 60 a per-address limit allows.
    const signed = await burst(300, { 'x-telegram-bot-api-secret-token': SECRET })
    expect(signed).toEqual({ 200: 300 })
    const unsigned = await burst(200, {})
    expect(Object.keys(unsigned).sort()).toEqual(['403', '429'])
    expect(unsigned['429']).toBeGreaterThan(0)
    // The secret compares case-sensitively.
    const wrong = await burst(5, { 'x-telegram-bot-api-secret-token': SECRET.toUpperCase() })
    expect(Object.keys(wrong).every((k) => k === '403' || k === '429')).toBe(true)
    const [nginx] = await containers('nginx')
    const logs = await exec(['docker', 'logs', nginx ?? ''])
    const lines = (logs.stdout + logs.stderr).split('\n').filter((l) => l.includes('"POST /webhook'))
    const refused = lines.filter((l) => / (403|429) \d+ /.test(l))
    expect(refused.length).toBeGreaterThanOrEqual(205)
    // nginx answered them itself: no upstream was contacted.
    expect(refused.every((l) => l.endsWith('upstream=-'))).toBe(true)
    expect(lines.filter((l) => / 200 \d+ /.test(l)).every((l) => /upstream=[\d.]+:8080$/.test(l))).toBe(true)
  })
})

describe('blue-green under load', () => {
  it('2. two deploys and a failed one at 50 signed requests/s: every request answered 2xx, nginx never replaced', async () => {
    const nginx = await containers('nginx')
    // Two bot containers must run side by side at some point of each switch.
    let mostBots = 0
    let watching = true
    const watcher = (async () => {
      while (watching) {
        mostBots = Math.max(mostBots, (await containers('bot')).length)
        await new Promise((r) => setTimeout(r, 300))
      }
    })()
    const load = startLoad({ url, secret: SECRET, rate: 50 })
    const windows: [string, number, number][] = []
    const step = async (label: string, run: () => Promise<{ code: number; stdout: string; stderr: string }>, code: number) => {
      const from = load.now()
      const result = await run()
      windows.push([label, from, load.now()])
      expect(result.code, `${label}\n${result.stdout}\n${result.stderr}`).toBe(code)
      return result
    }
    try {
      await new Promise((r) => setTimeout(r, 3000))
      windows.push(['idle', 0, load.now()])
      await step('deploy v1.1.0', () => deploy(['v1.1.0']), 0)
      expect(events().at(-1)).toMatchObject({ artifact_id: 'v1.1.0', status: 'success', downtime_seconds: 0 })
      expect(await runningVersion()).toBe('v1.1.0')
      // Back to v1.0.0 keeping the data: its schema is downgraded while v1.1.0 still serves.
      const back = await step('rollback v1.0.0 --keep-data', () => rollback(['v1.0.0', '--keep-data']), 0)
      expect(back.stdout).not.toContain('Stopping current services')
      expect(await runningVersion()).toBe('v1.0.0')
      const failed = await step('deploy v1.3.0 (never healthy)', () => deploy(['v1.3.0']), 1)
      expect(failed.stderr).toMatch(/the bot reports a failed startup check: .*PAYMENTS_WEBHOOK_SECRET/)
      expect(failed.stdout).toMatch(/INFO: Rolling back to v1.0.0[\s\S]*INFO: Rollback complete/)
      const failedDeploy = events().filter((e) => e.event_type === 'deploy').at(-1)
      expect(failedDeploy).toMatchObject({ artifact_id: 'v1.3.0', status: 'rolled_back' })
      // the automatic rollback is an event of its own, linked to the deploy it undid
      expect(events().at(-1)).toMatchObject({ event_type: 'rollback', artifact_id: 'v1.0.0', triggered_by: 'automated', rollback_of: failedDeploy?.event_id })
    } finally {
      watching = false
      await watcher
    }
    const samples = await load.stop()
    for (const [label, from, to] of windows) console.log(formatSummary(label, summarize(samples, from, to)))
    const all = summarize(samples)
    console.log(formatSummary('whole run', all))
    expect(all.sent).toBeGreaterThan(500)
    // No request refused, reset, answered with an error or timed out. A switch reloads nginx
    // once (two here: the deploy and the rollback; the failed deploy does not), and the exiting
    // workers close their idle keep-alive connections: /webhook closes each connection after its
    // response (keepalive_timeout 0), so no request can race that close.
    expect(all.failures).toEqual({})
    expect(mostBots).toBe(2)
    expect(await containers('bot')).toHaveLength(1)
    expect(await containers('nginx')).toEqual(nginx)
    expect(await runningVersion()).toBe('v1.0.0')
    expect((await stack.script('health-check', [], env)).code).toBe(0)
  })
})

describe('webhook registration', () => {
  it('3. deploy leaves the webhook alone when it is equal, and sets it again when it was changed', async () => {
    const sets = () => api.callsOf('setWebhook')
    expect(sets()).toHaveLength(1)
    const again = await deploy(['v1.1.0'])
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout).toContain('INFO: Telegram webhook already points at TELEGRAM_WEBHOOK_URL')
    const forced = await deploy(['v1.1.0', '--force'])
    expect(forced.code, forced.stderr).toBe(0)
    expect(sets()).toHaveLength(1)
    // Someone pointed it elsewhere: the next deploy puts it back.
    api.webhook.url = 'https://old.example.com/hook'
    const back = await deploy(['v1.1.0', '--force'])
    expect(back.code, back.stderr).toBe(0)
    expect(back.stdout).toContain('INFO: Telegram webhook set to TELEGRAM_WEBHOOK_URL')
    expect(sets()).toHaveLength(2)
    expect(api.webhook).toMatchObject({ url: HOOK, secret: SECRET })
    // health-check shows what Telegram says about delivery; a recent error makes the bot degraded.
    const healthy = await stack.script('health-check', ['bot', '--json'], env)
    expect(healthy.code, healthy.stdout + healthy.stderr).toBe(0)
    expect(JSON.parse(healthy.stdout).services.bot.webhook).toEqual({ pending_update_count: 0, last_error_date: null, last_error_message: null })
    Object.assign(api.webhook, { pending: 3, errorDate: Math.floor(Date.now() / 1000) - 20, errorMessage: 'Connection timed out' })
    const failing = await stack.script('health-check', ['bot'], env)
    expect(failing.code).toBe(1)
    expect(failing.stdout).toMatch(/INFO: bot: degraded \(.*; Telegram's last webhook delivery failed 2\ds ago: Connection timed out \(3 update\(s\) pending\)\)/)
    Object.assign(api.webhook, { pending: 0, errorDate: Math.floor(Date.now() / 1000) - 600 })
    expect((await stack.script('health-check', ['bot'], env)).code).toBe(0)
    // The token travels in the API path only: never in the log.
    expect(fs.readFileSync(stack.env.LOG_FILE ?? '', 'utf8')).not.toContain(BOT_TOKEN)
  })
})

describe('webhook to polling mode', () => {
  it('4. TELEGRAM_WEBHOOK_URL emptied, then the running tag deployed: the webhook is deleted before the poller starts, nginx is removed, the bot polls with no 409; rows intact', async () => {
    const rows = await stackChecksums(stack)
    const callsBefore = api.calls.length
    setWebhookUrl('')
    const result = await deploy(['v1.1.0'])
    expect(result.code, result.stdout + result.stderr).toBe(0)
    expect(result.stdout).toContain(`INFO: The running bot is in webhook mode and ${envFile()} says polling mode: this deploy switches modes`)
    expect(result.stdout).toMatch(/INFO: Switching from webhook to polling mode[^\n]*\n\[[^\]]+\] INFO: Telegram webhook deleted: polling mode\n[\s\S]*INFO: Removing nginx: polling mode has no public ingress\n[\s\S]*INFO: All services healthy/)
    expect(result.stdout).not.toContain('blue-green')
    expect(events().at(-1)).toMatchObject({ artifact_id: 'v1.1.0', status: 'success', downtime_seconds: expect.any(Number) })
    // Pending updates stay at Telegram for the poller.
    expect(api.callsOf('deleteWebhook').map((c) => c.body)).toEqual([{ drop_pending_updates: false }])
    expect(api.webhook.url).toBe('')
    // The poller's calls since the switch: every one accepted, none refused with 409 Conflict.
    const since = () => api.calls.slice(callsBefore)
    const deletedAt = since().findIndex((c) => c.method === 'deleteWebhook')
    await waitFor(() => since().some((c, i) => i > deletedAt && c.method === 'getUpdates' && c.status === 200), 30_000)
    expect(since().filter((c) => c.method === 'getUpdates' && c.status !== 200)).toEqual([])
    expect(await botMode()).toBe('polling')
    // Gone, not only stopped: `up --remove-orphans` would leave a disabled profile's nginx be.
    expect((await exec(['docker', 'ps', '-a', '-q', '--filter', `label=com.docker.compose.project=${stack.project}`, '--filter', 'label=com.docker.compose.service=nginx'])).stdout.trim()).toBe('')
    expect(await containers('bot')).toHaveLength(1)
    const health = await stack.script('health-check', [], env)
    expect(health.code, health.stdout + health.stderr).toBe(0)
    expect(health.stdout).toContain('INFO: nginx: not deployed')
    expect(await stackChecksums(stack)).toEqual(rows)
    // Polling mode as before: the next deploy of the running tag is a no-op, and asks Telegram nothing.
    const telegram = () => api.calls.filter((c) => c.method !== 'getUpdates').length
    const asked = telegram()
    const again = await deploy(['v1.1.0'])
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout).toContain('INFO: v1.1.0 is already deployed and healthy; nothing to do')
    expect(telegram()).toBe(asked)
  })
})
