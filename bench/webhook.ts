// A webhook load generator: signed Telegram-style updates POSTed through nginx over TLS at a fixed
// rate, the way Telegram delivers them (keep-alive connections, the secret token header). Used by
// test/e2e/webhook.test.ts, and run on its own (`tsx bench/webhook.ts`, meant as
// `npm run bench:webhook`) it brings up a webhook-mode stack on the Docker test bed and measures
// failed requests and p50/p99 during blue-green switches against the same load with no deploy, and
// during one --stop-first deploy (today's stop-then-start) for comparison.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import https from 'node:https'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export interface Sample {
  /** ms since the load started */
  at: number
  ms: number
  /** HTTP status, or the error code (ECONNREFUSED, ECONNRESET, timeout) */
  outcome: number | string
}

export interface LoadOptions {
  url: string
  secret: string
  /** requests per second */
  rate: number
  /** concurrent keep-alive connections at most (Telegram's max_connections defaults to 40) */
  maxSockets?: number
  timeoutMs?: number
}

export interface Load {
  /** ms since the load started: marks a window to compare (a deploy's start and end) */
  now(): number
  stop(): Promise<Sample[]>
}

export function startLoad(opts: LoadOptions): Load {
  const agent = new https.Agent({ keepAlive: true, maxSockets: opts.maxSockets ?? 16, rejectUnauthorized: false })
  const target = new URL(opts.url)
  const samples: Sample[] = []
  const pending = new Set<Promise<void>>()
  const started = performance.now()
  const now = () => performance.now() - started
  let sent = 0
  let stopped = false

  const send = (updateId: number): Promise<void> =>
    new Promise((resolve) => {
      const at = now()
      const body = JSON.stringify({ update_id: updateId, message: { message_id: updateId, date: Math.floor(Date.now() / 1000), chat: { id: 4242, type: 'private' }, text: `load ${updateId}` } })
      const done = (outcome: number | string) => {
        samples.push({ at, ms: now() - at, outcome })
        resolve()
      }
      const req = https.request(
        { host: target.hostname, port: target.port, path: target.pathname, method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-telegram-bot-api-secret-token': opts.secret } },
        (res) => {
          res.resume()
          res.on('end', () => done(res.statusCode ?? 0))
          res.on('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message))
        },
      )
      req.setTimeout(opts.timeoutMs ?? 30_000, () => req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })))
      req.on('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message))
      req.end(body)
    })

  // Paced by the clock, not by answers: a slow or refusing server does not slow the load down.
  const timer = setInterval(() => {
    const due = Math.floor((now() / 1000) * opts.rate)
    while (!stopped && sent < due) {
      const p = send(++sent)
      pending.add(p)
      void p.finally(() => pending.delete(p))
    }
  }, 5)

  return {
    now,
    async stop() {
      stopped = true
      clearInterval(timer)
      await Promise.all([...pending])
      agent.destroy()
      return samples.sort((a, b) => a.at - b.at)
    },
  }
}

export interface Summary {
  sent: number
  failed: number
  /** failed requests by outcome: {"502": 3, "ECONNRESET": 1} */
  failures: Record<string, number>
  p50: number
  p99: number
  max: number
}

/** Failed = anything but 2xx. Latencies in ms, of the samples whose request started in [from, to). */
export function summarize(samples: Sample[], from = 0, to = Infinity): Summary {
  const window = samples.filter((s) => s.at >= from && s.at < to)
  const failures: Record<string, number> = {}
  for (const s of window) if (!(typeof s.outcome === 'number' && s.outcome >= 200 && s.outcome < 300)) failures[String(s.outcome)] = (failures[String(s.outcome)] ?? 0) + 1
  const ms = window.map((s) => s.ms).sort((a, b) => a - b)
  const pct = (p: number) => (ms.length ? Math.round((ms[Math.min(ms.length - 1, Math.floor((p / 100) * ms.length))] ?? 0) * 10) / 10 : 0)
  return { sent: window.length, failed: Object.values(failures).reduce((a, b) => a + b, 0), failures, p50: pct(50), p99: pct(99), max: pct(100) }
}

export function formatSummary(label: string, s: Summary): string {
  const why = Object.entries(s.failures).map(([k, v]) => `${k}: ${v}`).join(', ')
  return `${label}: ${s.sent} requests, ${s.failed} failed${why ? ` (${why})` : ''}, p50 ${s.p50} ms, p99 ${s.p99} ms, max ${s.max} ms`
}

// ---- npm run bench:webhook ---------------------------------------------------------------------

const RATE = Number(process.env.BENCH_RATE ?? 50)
const IDLE_SECONDS = Number(process.env.BENCH_IDLE_SECONDS ?? 20)

/**
 * A webhook-mode compose stack on the Docker test bed (provisioned first), nginx with a
 * self-signed certificate on a free loopback port; also bench/swarm.ts's one-host side.
 */
export async function composeWebhookStack(apiBase: string) {
  const { ROOT } = await import('../test/support/scripts.ts')
  const { bedEnv, createStack, exec } = await import('../test/support/stack.ts')
  const { freePort } = await import('../test/support/droplet.ts')
  const bed = spawnSync('bash', [path.join(ROOT, 'test/e2e/bed/provision.sh')], { stdio: 'inherit' })
  if (bed.status !== 0) throw new Error('the Docker test bed could not be provisioned')
  const stack = createStack('v2')
  const appDir = path.join(stack.dir, 'app')
  await exec(['git', 'clone', '--quiet', bedEnv().APP_REPO ?? '', appDir])
  const certs = path.join(stack.dir, 'letsencrypt')
  fs.mkdirSync(path.join(certs, 'live', 'localhost'), { recursive: true })
  await exec(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-keyout', path.join(certs, 'live/localhost/privkey.pem'), '-out', path.join(certs, 'live/localhost/fullchain.pem')])
  const httpsPort = await freePort()
  const env = { APP_DIR: appDir, HEALTH_CHECK_TIMEOUT: '60', TELEGRAM_WEBHOOK_URL: 'https://bot.example.com/webhook', TELEGRAM_API_BASE: apiBase, LETSENCRYPT_DIR: certs, CERTBOT_WEBROOT: path.join(stack.dir, 'webroot'), DOMAIN: 'localhost', NGINX_HTTP_PORT: `127.0.0.1:${await freePort()}`, NGINX_HTTPS_PORT: `127.0.0.1:${httpsPort}` }
  return { stack, env, url: `https://127.0.0.1:${httpsPort}/webhook` }
}

async function bench(): Promise<void> {
  const { startBotApi } = await import('../test/support/bot-api.ts')
  const api = await startBotApi()
  const { stack, env, url } = await composeWebhookStack(api.base)
  try {
    const script = async (name: string, args: string[], expected: number) => {
      const r = await stack.script(name, [...args, '--yes'], env)
      if (r.code !== expected) throw new Error(`${name} ${args.join(' ')} exited ${r.code} (expected ${expected}):\n${r.stderr}`)
    }
    await script('deploy', ['v1.0.0'], 0)
    const load = startLoad({ url, secret: 'e2e_webhook_secret', rate: RATE })
    const windows: { label: string; from: number; to: number }[] = []
    const step = async (label: string, name: string, args: string[], expected: number) => {
      const from = load.now()
      await script(name, args, expected)
      windows.push({ label, from, to: load.now() })
    }
    await new Promise((r) => setTimeout(r, IDLE_SECONDS * 1000))
    windows.push({ label: 'idle (no deploy)', from: 0, to: load.now() })
    await step('deploy v1.1.0 (blue-green)', 'deploy', ['v1.1.0'], 0)
    await step('rollback v1.0.0 --keep-data (blue-green)', 'rollback', ['v1.0.0', '--keep-data'], 0)
    await step('deploy v1.1.0 (blue-green)', 'deploy', ['v1.1.0'], 0)
    await step('deploy v1.3.0, never healthy (automatic rollback)', 'deploy', ['v1.3.0'], 1)
    await step('deploy v1.1.0 --force --stop-first (stop-then-start)', 'deploy', ['v1.1.0', '--force', '--stop-first'], 0)
    const samples = await load.stop()
    console.log(`\n${RATE} signed requests/s through nginx over TLS (a keep-alive client; /webhook closes each connection after its response):`)
    for (const w of windows) console.log(`  ${formatSummary(w.label, summarize(samples, w.from, w.to))}`)
    const idle = summarize(samples, 0, IDLE_SECONDS * 1000)
    const switching = windows.filter((w) => w.label.includes('blue-green') || w.label.includes('automatic'))
    const during = summarize(samples.filter((s) => switching.some((w) => s.at >= w.from && s.at < w.to)))
    console.log(`\nblue-green switches together: ${during.sent} requests, ${during.failed} failed; p50 ${during.p50} ms (idle ${idle.p50} ms, x${ratio(during.p50, idle.p50)}), p99 ${during.p99} ms (idle ${idle.p99} ms, x${ratio(during.p99, idle.p99)})`)
    console.log(`goal: 0 failed requests during blue-green switches: ${during.failed === 0 ? 'met' : 'NOT met'}`)
  } finally {
    await stack.compose(['--profile', 'webhook', 'rm', '--stop', '--force', 'nginx'])
    await stack.down()
    await api.close()
  }
}

function ratio(a: number, b: number): string {
  return b > 0 ? (a / b).toFixed(1) : '-'
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) await bench()
