import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { freePort } from '../support/droplet.ts'
import { exec, ROOT, tempDir, type ScriptResult } from '../support/scripts.ts'
import { bedEnv, composeEnvFiles, DB } from '../support/stack.ts'

// The monitoring stack on the bed's stand-ins for the upstream images (Debian 12's Prometheus 2.42,
// Alertmanager 0.25 and exporters: test/e2e/bed/images), started as README's "Turning it on" does:
// the production file plus the monitoring file, --profile monitoring, and in webhook mode nginx
// with its exporter (--profile webhook --profile monitoring-webhook). The bot is not started.
// Checked through Prometheus's HTTP API on 127.0.0.1: every exporter scraped and its server up,
// the rules of deployment/monitoring/rules loaded, Alertmanager found; and the upstream images'
// contract the compose file relies on (flags, users, writable data volumes).
const FILES = [path.join(ROOT, 'deployment/docker-compose.prod.yml'), path.join(ROOT, 'deployment/monitoring/docker-compose.monitoring.yml')]
const PROFILES = ['monitoring', 'webhook', 'monitoring-webhook']
const RULES = path.join(ROOT, 'deployment/monitoring/rules/toogoodtogo.rules.yml')
const IMAGES = ['PROMETHEUS_IMAGE', 'ALERTMANAGER_IMAGE', 'POSTGRES_EXPORTER_IMAGE', 'REDIS_EXPORTER_IMAGE', 'NGINX_EXPORTER_IMAGE']
const MONITORING = ['prometheus', 'alertmanager', 'postgres-exporter', 'redis-exporter', 'nginx-exporter']
const PREFIX = 'ttgmonimg'
// Prometheus scrapes every 30 s (prometheus.yml): the first scrape of each target comes within one interval.
const SCRAPE_WAIT_MS = 75_000

const project = `${PREFIX}${Date.now().toString(36)}`
const dir = tempDir('ttg-monimg-')
const envFile = path.join(dir, '.env.production')
let prometheus = ''
let alertmanager = ''

const compose = (args: string[], name = project): Promise<ScriptResult> =>
  exec(['docker', 'compose', '-p', name, '--env-file', envFile, ...FILES.flatMap((f) => ['-f', f]), ...PROFILES.flatMap((p) => ['--profile', p]), ...args], composeEnvFiles(envFile))

async function must(pending: Promise<ScriptResult>): Promise<string> {
  const r = await pending
  if (r.code !== 0) throw new Error(`command failed (${r.code}):\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}

async function getJson<T>(url: string, init?: RequestInit): Promise<T> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(5000) })
  if (!res.ok) throw new Error(`${init?.method ?? 'GET'} ${url}: ${res.status} ${await res.text()}`)
  return (await res.json()) as T
}

interface Sample { metric: Record<string, string>; value: [number, string] }
interface Target { labels: Record<string, string>; health: string; lastError: string }
interface Rule { name: string; health: string; lastError?: string }
interface RuleGroup { name: string; file: string; rules: Rule[] }

const api = <T>(query: string) => getJson<{ status: string; data: T }>(`${prometheus}/api/v1/${query}`).then((r) => r.data)

/** The value of an instant query's first series, or undefined while there is none. */
async function value(expr: string): Promise<string | undefined> {
  return (await api<{ result: Sample[] }>(`query?query=${encodeURIComponent(expr)}`)).result[0]?.value[1]
}

async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      if (await check()) return true
    } catch {
      // not answering yet
    }
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 1000))
  }
}

/** A run killed before its afterAll leaves its project, and with it the monitoring network's fixed subnet, which the next run would then fail to create. */
async function removeLeftovers(): Promise<void> {
  const listed = await exec(['docker', 'ps', '-a', '--format', '{{.Label "com.docker.compose.project"}}'])
  for (const name of new Set(listed.stdout.split('\n').filter((p) => p.startsWith(PREFIX)))) {
    await compose(['down', '--volumes', '--remove-orphans', '--timeout', '1'], name)
  }
}

beforeAll(async () => {
  const bed = bedEnv()
  for (const name of IMAGES) if (!bed[name]) throw new Error(`test/e2e/bed/.bed.env has no ${name}: run test/e2e/bed/provision.sh`)

  // Alertmanager's secrets as README's "Turning it on" makes them: readable by group 65534 only.
  const secrets = path.join(dir, 'monitoring-secrets')
  fs.mkdirSync(secrets, { mode: 0o750 })
  fs.writeFileSync(path.join(secrets, 'slack_webhook_url'), 'http://127.0.0.1:9/unused\n', { mode: 0o640 })
  fs.chownSync(secrets, 0, 65534)
  fs.chownSync(path.join(secrets, 'slack_webhook_url'), 0, 65534)
  // nginx (webhook profile) needs a certificate for DOMAIN.
  const certs = path.join(dir, 'letsencrypt')
  fs.mkdirSync(path.join(certs, 'live', 'localhost'), { recursive: true })
  fs.mkdirSync(path.join(dir, 'certbot'))
  await must(exec(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-keyout', path.join(certs, 'live/localhost/privkey.pem'), '-out', path.join(certs, 'live/localhost/fullchain.pem')]))

  const [prometheusPort, alertmanagerPort, httpPort, httpsPort] = [await freePort(), await freePort(), await freePort(), await freePort()]
  prometheus = `http://127.0.0.1:${prometheusPort}`
  alertmanager = `http://127.0.0.1:${alertmanagerPort}`
  fs.writeFileSync(envFile, [
    `BOT_IMAGE=${bed.BOT_IMAGE}`, 'APP_VERSION=v1.0.0',
    `POSTGRES_DB=${DB.name}`, `POSTGRES_USER=${DB.user}`, `POSTGRES_PASSWORD=${DB.password}`,
    `POSTGRES_IMAGE=${bed.POSTGRES_IMAGE}`, `REDIS_IMAGE=${bed.REDIS_IMAGE}`, `NGINX_IMAGE=${bed.NGINX_IMAGE}`,
    ...IMAGES.map((name) => `${name}=${bed[name]}`),
    `PROMETHEUS_PORT=${prometheusPort}`, `ALERTMANAGER_PORT=${alertmanagerPort}`, `ALERTMANAGER_SECRETS_DIR=${secrets}`,
    'DOMAIN=localhost', `LETSENCRYPT_DIR=${certs}`, `CERTBOT_WEBROOT=${path.join(dir, 'certbot')}`, `PITR_REPO_DIR=${path.join(dir, 'pgbackrest')}`,
    `NGINX_HTTP_PORT=127.0.0.1:${httpPort}`, `NGINX_HTTPS_PORT=127.0.0.1:${httpsPort}`,
    '',
  ].join('\n'), { mode: 0o600 })

  await removeLeftovers()
  // The servers first and healthy, so that the first scrape of each exporter already finds them.
  await must(compose(['up', '-d', '--wait', 'postgres', 'redis', 'nginx']))
  await must(compose(['up', '-d', ...MONITORING]))
})

afterAll(async () => {
  if (process.env.TTG_KEEP_STACK) return console.log(`kept ${dir} (project ${project})`)
  await compose(['down', '--volumes', '--remove-orphans', '--timeout', '5'])
  fs.rmSync(dir, { recursive: true, force: true })
})

describe('the monitoring stack on the bed images', () => {
  it('scrapes the exporters, and each reports its server up (pg_up, redis_up, nginx_up)', async () => {
    const expected = { pg_up: '1', redis_up: '1', nginx_up: '1', 'up{job="prometheus"}': '1', 'up{job="alertmanager"}': '1' }
    const seen: Record<string, string | undefined> = {}
    await until(async () => {
      for (const expr of Object.keys(expected)) seen[expr] = await value(expr)
      return Object.entries(expected).every(([expr, v]) => seen[expr] === v)
    }, SCRAPE_WAIT_MS)
    if (!Object.entries(expected).every(([expr, v]) => seen[expr] === v)) {
      const targets = await api<{ activeTargets: Target[] }>('targets').catch(() => ({ activeTargets: [] }))
      const logs = await compose(['logs', '--tail', '15', ...MONITORING])
      console.log(targets.activeTargets.map((t) => `${t.labels.job}: ${t.health} ${t.lastError}`).join('\n'), logs.stdout, logs.stderr)
    }
    expect(seen).toEqual(expected)

    const targets = (await api<{ activeTargets: Target[] }>('targets')).activeTargets
    const health = Object.fromEntries(targets.map((t) => [t.labels.job, t.health]))
    expect(health).toMatchObject({ postgres: 'up', redis: 'up', nginx: 'up', prometheus: 'up', alertmanager: 'up' })
    // Real readings, not only the up gauges: the exporters reach their servers with the compose file's settings.
    expect(Number(await value(`pg_database_size_bytes{datname="${DB.name}"}`))).toBeGreaterThan(0)
    expect(await value('redis_connected_clients > 0')).toBeDefined()
    expect(Number(await value('nginx_connections_accepted'))).toBeGreaterThan(0)
  })

  it('loads every rule of deployment/monitoring/rules, without evaluation errors', async () => {
    const expected = [...fs.readFileSync(RULES, 'utf8').matchAll(/^\s*- alert: (\S+)/gm)].map((m) => m[1]).sort()
    expect(expected.length).toBeGreaterThan(10)
    const { groups } = await api<{ groups: RuleGroup[] }>('rules')
    expect(new Set(groups.map((g) => g.file))).toEqual(new Set(['/etc/prometheus/rules/toogoodtogo.rules.yml']))
    const rules = groups.flatMap((g) => g.rules)
    expect(rules.map((r) => r.name).sort()).toEqual(expected)
    for (const rule of rules) expect(rule.health, `${rule.name}: ${rule.lastError}`).not.toBe('err')
  })

  it('runs Prometheus with the compose file\'s flags and sends to Alertmanager', async () => {
    const flags = await api<Record<string, string>>('status/flags')
    expect(flags).toMatchObject({
      'config.file': '/etc/prometheus/prometheus.yml',
      'storage.tsdb.path': '/prometheus',
      'storage.tsdb.retention.time': '15d',
      'web.listen-address': ':9090',
    })
    // Debian's classic web UI, with the one moment-timezone file it loads (the image leaves out the rest)
    for (const page of ['/graph', '/classic/static/moment-timezone/moment-timezone-with-data.min.js']) {
      expect((await fetch(`${prometheus}${page}`, { signal: AbortSignal.timeout(5000) })).status, page).toBe(200)
    }
    const { activeAlertmanagers } = await api<{ activeAlertmanagers: { url: string }[] }>('alertmanagers')
    expect(activeAlertmanagers.map((a) => a.url)).toEqual(['http://alertmanager:9093/api/v2/alerts'])

    const status = await getJson<{ cluster: { status: string }; config: { original: string } }>(`${alertmanager}/api/v2/status`)
    expect(status.cluster.status).toBe('disabled') // --cluster.listen-address=
    expect(status.config.original).toContain('api_url_file: /etc/alertmanager/secrets/slack_webhook_url')
    // the secret as README has it on the droplet (group 65534, mode 640), read as the server's user
    expect((await must(compose(['exec', '-T', 'alertmanager', 'cat', '/etc/alertmanager/secrets/slack_webhook_url']))).trim()).toBe('http://127.0.0.1:9/unused')
  })

  it('runs every image as its upstream user: nobody (65534) for Prometheus, Alertmanager and postgres-exporter', async () => {
    const users: Record<string, string> = {
      prometheus: '65534 65534',
      alertmanager: '65534 65534',
      'postgres-exporter': '65534 65534',
      'redis-exporter': '59000 59000', // oliver006/redis_exporter: USER 59000:59000
      'nginx-exporter': '1001 1001', // nginx/nginx-prometheus-exporter: USER 1001:1001
    }
    for (const [service, ids] of Object.entries(users)) {
      // PID 1 is the server itself (no entrypoint script): its real uid and gid.
      const status = await must(compose(['exec', '-T', service, 'cat', '/proc/1/status']))
      const uid = /^Uid:\s+(\d+)/m.exec(status)?.[1]
      const gid = /^Gid:\s+(\d+)/m.exec(status)?.[1]
      expect(`${uid} ${gid}`, service).toBe(ids)
    }
    for (const [service, data] of [['prometheus', '/prometheus'], ['alertmanager', '/alertmanager']] as const) {
      expect((await must(compose(['exec', '-T', service, 'stat', '-c', '%u:%g %a', data]))).trim(), service).toMatch(/^65534:65534 7\d\d$/)
    }
    expect((await must(compose(['exec', '-T', 'prometheus', 'ls', '/prometheus']))).split('\n')).toEqual(expect.arrayContaining(['wal', 'chunks_head']))
  })

  it('keeps Alertmanager\'s state in its volume across a restart (a silence survives)', async () => {
    const now = Date.now()
    const { silenceID } = await getJson<{ silenceID: string }>(`${alertmanager}/api/v2/silences`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        matchers: [{ name: 'alertname', value: 'MonitoringImagesTest', isRegex: false, isEqual: true }],
        startsAt: new Date(now).toISOString(),
        endsAt: new Date(now + 3600_000).toISOString(),
        createdBy: 'monitoring-images.test.ts',
        comment: 'written to /alertmanager on shutdown',
      }),
    })
    await must(compose(['restart', '--timeout', '10', 'alertmanager']))
    expect(await until(async () => (await fetch(`${alertmanager}/-/ready`)).ok, 30_000)).toBe(true)
    const silence = await getJson<{ id: string; status: { state: string } }>(`${alertmanager}/api/v2/silence/${silenceID}`)
    expect(silence).toMatchObject({ id: silenceID, status: { state: 'active' } })
  })
})
