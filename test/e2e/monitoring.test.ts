import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseEnvFile } from '../../lib/core/env-file.ts'
import { createDroplet, ensureDropletImage, freePort, gitHostOverSsh, hostSnapshot, loopbackBridge, stackContainers, type Droplet, type LoopbackBridge } from '../support/droplet.ts'
import { bridgeGateway } from '../support/pitr-stack.ts'
import { ROOT } from '../support/scripts.ts'
import { stopAfterFirstFailure } from '../support/sequence.ts'
import { bedEnv } from '../support/stack.ts'

// setup-droplet.sh --monitoring on a fresh droplet (a systemd-booted Debian 12 container on the
// bed's engine, test/support/droplet.ts), with the bed's Prometheus, Alertmanager and exporter
// images (built from Debian's packages), then the monitoring pipeline end to end: a backup's
// metric through node_exporter on the droplet into Prometheus, Redis stopped until RedisDown
// reaches a webhook receiver and status.sh, a deploy that keeps every monitoring container.
//
// Where this droplet differs from a real one:
// - It is a container, so the host Prometheus scrapes as host.docker.internal (the monitoring
//   network's gateway on a droplet) is the bed, not it. The droplet joins the stack's monitoring
//   network at a fixed address and NODE_EXPORTER_HOST (a setting of the compose file, default the
//   gateway) names that address: the scrape still comes from the monitoring subnet and passes the
//   droplet's own ufw, as on a droplet.
// - Ports compose publishes on 127.0.0.1 are on the bed's loopback; a relay makes the droplet's
//   127.0.0.1:<Alertmanager port> reach them, so status.sh reads ALERTMANAGER_URL as written.
// - PROMETHEUS_CONFIG is a copy of deployment/monitoring/prometheus.yml scraping and evaluating
//   every 5 s instead of 30 s (same targets, same rule file). RedisDown's `for: 1m` and
//   Alertmanager's `group_wait: 30s` are the real ones.
const bed = bedEnv()
const TOKEN = '123456:E2E-monitoring_token'
const STRIPE = 'sk_test_monitoring_key'
const TEXTFILE_DIR = '/var/lib/prometheus/node-exporter'
/** the droplet's address on the stack's monitoring network (172.30.77.0/24, the default subnet) */
const DROPLET_ON_MONITORING = '172.30.77.250'
const MONITORING_SERVICES = ['alertmanager', 'postgres-exporter', 'prometheus', 'redis-exporter']

function bedValue(key: string): string {
  const image = bed[key]
  if (!image) throw new Error(`${key} is missing from test/e2e/bed/.bed.env: run test/e2e/bed/provision.sh (it builds the monitoring images)`)
  return image
}

const IMAGES = {
  BOT_IMAGE: bedValue('BOT_IMAGE'), APP_VERSION: 'v1.0.0', POSTGRES_IMAGE: bedValue('POSTGRES_IMAGE'), REDIS_IMAGE: bedValue('REDIS_IMAGE'), NGINX_IMAGE: bedValue('NGINX_IMAGE'),
  PROMETHEUS_IMAGE: bedValue('PROMETHEUS_IMAGE'), ALERTMANAGER_IMAGE: bedValue('ALERTMANAGER_IMAGE'),
  POSTGRES_EXPORTER_IMAGE: bedValue('POSTGRES_EXPORTER_IMAGE'), REDIS_EXPORTER_IMAGE: bedValue('REDIS_EXPORTER_IMAGE'),
}

interface Sample { metric: Record<string, string>; value: [number, string] }

describe('setup-droplet --monitoring on a fresh droplet, then the pipeline end to end', () => {
  let d: Droplet
  let answers: string
  let prometheusUrl: string
  let webhookUrl: string
  let alertmanagerPort: number
  let relay: LoopbackBridge | null = null
  const received: string[] = []
  let receiver: http.Server
  let redisStoppedAt = 0
  const scriptEnv = () => ({ DEPLOY_DIR: d.deployDir, NO_COLOR: '1' })
  const script = (name: string) => `${d.toolkitDir}/scripts/${name}.sh`

  beforeAll(async () => {
    const image = ensureDropletImage()
    // The Slack-compatible receiver, where the Alertmanager container reaches this host.
    receiver = http.createServer((req, res) => {
      let body = ''
      req.on('data', (chunk) => (body += chunk))
      req.on('end', () => {
        received.push(body)
        res.end('ok')
      })
    })
    const gateway = await bridgeGateway()
    await new Promise<void>((resolve) => receiver.listen(0, gateway, resolve))
    webhookUrl = `http://${gateway}:${(receiver.address() as net.AddressInfo).port}/alerts`

    d = await createDroplet(image, 'm')
    // The application over SSH with the operator's own key, as in setup-droplet.test.ts (the deploy
    // user cannot read the bed's root-owned repository through file://).
    const repo = await gitHostOverSsh(d, bedValue('APP_REPO'))
    d.env.APP_REPO_URL = repo.url
    const key = await d.sh("ssh-keygen -q -t ed25519 -N '' -C 'operator key' -f /root/bot_deploy_key && cat /root/bot_deploy_key.pub")
    expect(key.code, key.stderr).toBe(0)
    await repo.authorize(key.stdout)
    const promPort = await freePort()
    alertmanagerPort = await freePort()
    prometheusUrl = `http://127.0.0.1:${promPort}`
    const promConfig = path.join(d.root, 'prometheus-e2e.yml')
    const real = fs.readFileSync(path.join(ROOT, 'deployment/monitoring/prometheus.yml'), 'utf8')
    const fast = real.replace('scrape_interval: 30s', 'scrape_interval: 5s\n  scrape_timeout: 4s').replace('evaluation_interval: 30s', 'evaluation_interval: 5s')
    expect(fast).not.toBe(real)
    fs.writeFileSync(promConfig, fast, { mode: 0o644 })
    answers = `${d.root}/answers.env`
    const values = {
      TELEGRAM_BOT_TOKEN: TOKEN, STRIPE_API_KEY: STRIPE, ...IMAGES, DEPLOY_KEY_FILE: '/root/bot_deploy_key',
      ALERT_WEBHOOK_URL: webhookUrl, PROMETHEUS_PORT: String(promPort), ALERTMANAGER_PORT: String(alertmanagerPort),
      NODE_EXPORTER_HOST: DROPLET_ON_MONITORING, PROMETHEUS_CONFIG: promConfig,
    }
    fs.writeFileSync(answers, Object.entries(values).map(([k, v]) => `${k}=${v}\n`).join(''), { mode: 0o600 })
  })
  afterAll(async () => {
    relay?.close()
    await d?.destroy()
    receiver?.close()
  })
  stopAfterFirstFailure()

  async function query(expr: string): Promise<Sample[]> {
    const response = await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(expr)}`)
    const body = (await response.json()) as { data?: { result?: Sample[] } }
    return body.data?.result ?? []
  }

  it('1. setup-droplet.sh --env-file --yes --monitoring: node_exporter on the host, its textfile directory the deploy user writes, ufw 9100 from the monitoring subnet only, the webhook URL file (600), .env.production, the monitoring containers', async () => {
    const started = Date.now()
    const r = await d.setup(['--env-file', answers, '--yes', '--monitoring'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    process.stdout.write(`[monitoring e2e] setup-droplet --monitoring: ${Math.round((Date.now() - started) / 1000)}s\n`)
    expect(r.stdout).toContain('INFO: Configuring monitoring')
    expect(r.stdout).toContain('INFO: Installing prometheus-node-exporter')
    expect(r.stdout).toContain(`INFO: Writing Alertmanager's webhook URL (ALERT_WEBHOOK_URL) to ${d.deployDir}/monitoring-secrets/slack_webhook_url`)
    expect(r.stdout + r.stderr).not.toContain(webhookUrl)
    expect(await d.readFile(`/var/log/toogoodtogo/deployment.log`)).not.toContain(webhookUrl)

    // node_exporter runs on the host (the droplet), not in a container, reading Debian's textfile directory.
    expect((await d.exec(['systemctl', 'is-active', 'prometheus-node-exporter.service'])).stdout.trim()).toBe('active')
    expect((await d.exec(['systemctl', 'is-enabled', 'toogoodtogo-health-metrics.timer'])).stdout.trim()).toBe('enabled')
    expect((await d.exec(['stat', '-c', '%a %U %G', TEXTFILE_DIR])).stdout.trim()).toBe('2775 root deploy')
    expect((await d.exec(['dpkg-statoverride', '--list', TEXTFILE_DIR])).stdout.trim()).toBe(`root deploy 2775 ${TEXTFILE_DIR}`)
    expect((await d.exec(['touch', `${TEXTFILE_DIR}/.written-by-deploy`], { user: 'deploy' })).code).toBe(0)
    expect((await d.exec(['rm', `${TEXTFILE_DIR}/.written-by-deploy`], { user: 'deploy' })).code).toBe(0)

    const ufw = await d.exec(['ufw', 'status'])
    expect(ufw.stdout).toMatch(/^9100\/tcp\s+ALLOW\s+172\.30\.77\.0\/24\s*$/m)
    expect(ufw.stdout).not.toMatch(/^9100\/tcp\s+ALLOW\s+Anywhere/m)

    // Only Alertmanager's user (nobody in its image) reads the URL; nothing else holds it.
    const secrets = await d.exec(['stat', '-c', '%a %u %g %n', `${d.deployDir}/monitoring-secrets`, `${d.deployDir}/monitoring-secrets/slack_webhook_url`])
    expect(secrets.stdout.trim().split('\n')).toEqual([`700 65534 65534 ${d.deployDir}/monitoring-secrets`, `600 65534 65534 ${d.deployDir}/monitoring-secrets/slack_webhook_url`])
    expect(await d.readFile(`${d.deployDir}/monitoring-secrets/slack_webhook_url`)).toBe(`${webhookUrl}\n`)
    const envText = await d.readFile(`${d.deployDir}/.env.production`)
    expect(envText).not.toContain(webhookUrl)
    expect(parseEnvFile(envText)).toMatchObject({
      MONITORING_ENABLED: 'true', ALERTMANAGER_URL: `http://127.0.0.1:${alertmanagerPort}`, ALERTMANAGER_SECRETS_DIR: `${d.deployDir}/monitoring-secrets`, NODE_EXPORTER_HOST: DROPLET_ON_MONITORING,
    })

    expect(runningServices(d)).toEqual(['alertmanager', 'bot', 'postgres', 'postgres-exporter', 'prometheus', 'redis', 'redis-exporter'])
    // Published on the loopback only (ufw does not filter what Docker publishes).
    const ports = spawnSync('docker', ['ps', '--filter', `label=com.docker.compose.project=${d.name}`, '--format', '{{.Ports}}'], { encoding: 'utf8' }).stdout
    expect(ports.match(/\d+\.\d+\.\d+\.\d+:\d+->/g)?.sort()).toEqual([`127.0.0.1:${alertmanagerPort}->`, `127.0.0.1:${new URL(prometheusUrl).port}->`].sort())

    // The droplet on the monitoring network, where Prometheus looks for node_exporter (see the top).
    const network = spawnSync('docker', ['network', 'ls', '-q', '--filter', `label=com.docker.compose.project=${d.name}`, '--filter', 'label=com.docker.compose.network=monitoring'], { encoding: 'utf8' }).stdout.trim()
    expect(network).toMatch(/^[0-9a-f]+$/)
    const connected = spawnSync('docker', ['network', 'connect', '--ip', DROPLET_ON_MONITORING, network, d.name], { encoding: 'utf8' })
    expect(connected.status, connected.stderr).toBe(0)
    // The droplet's 127.0.0.1 is not the bed's, where compose published Alertmanager (on a droplet they are one).
    relay = await loopbackBridge(d.name, '127.0.0.1', alertmanagerPort, `ttg-e2e-relay-${alertmanagerPort}`)
    await relay.start(d)
  })

  it('2. every step is idempotent with monitoring on: a second run (marker removed) changes no file, mode, rule or container', async () => {
    const started = Date.now()
    const snapshot = async () => (await hostSnapshot(d)) + (await d.sh(`stat -c '%a %U %G' ${TEXTFILE_DIR}; dpkg-statoverride --list; systemctl is-enabled prometheus-node-exporter.service toogoodtogo-health-metrics.timer`)).stdout
    const before = await snapshot()
    expect(before).toMatch(/^[0-9a-f]{64}  .*\/monitoring-secrets\/slack_webhook_url$/m)
    expect(before).toContain('9100/tcp')
    const containers = stackContainers(d)
    expect((await d.exec(['rm', `${d.deployDir}/.setup-complete`])).code).toBe(0)
    const r = await d.setup(['--env-file', answers, '--yes', '--monitoring'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toContain('INFO: prometheus-node-exporter already installed')
    expect(r.stdout).toContain('INFO: Firewall: port 9100/tcp (node_exporter) open to 172.30.77.0/24 only')
    expect(r.stdout).not.toContain('Writing Alertmanager')
    expect(r.stdout).not.toMatch(/Setting (MONITORING_ENABLED|ALERTMANAGER_URL|ALERTMANAGER_SECRETS_DIR|NODE_EXPORTER_HOST)=/)
    const withoutMarker = (s: string) => s.split('\n').filter((l) => !l.includes('.setup-complete')).join('\n')
    expect(withoutMarker(await snapshot())).toBe(withoutMarker(before))
    expect(stackContainers(d)).toBe(containers)
    process.stdout.write(`[monitoring e2e] idempotent re-run: ${Math.round((Date.now() - started) / 1000)}s\n`)
  })

  it("3. Redis stopped (docker stop of the stack's container): RedisDown's minute starts now, while the next steps run", async () => {
    const redis = containerOf(d, 'redis')
    expect(spawnSync('docker', ['stop', redis], { encoding: 'utf8' }).status).toBe(0)
    redisStoppedAt = Date.now()
    // the exporter answers, and says Redis does not
    const down = await until('redis_up 0 in Prometheus', async () => ((await query('redis_up'))[0]?.value[1] === '0' ? true : null), 30_000)
    expect(down).toBe(true)
  })

  it('4. backup.sh: its metric, written by the deploy user into the textfile directory, is scraped from node_exporter on the droplet through Prometheus', async () => {
    const backup = await d.exec([script('backup'), 'manual'], { user: 'deploy', env: scriptEnv() })
    expect(backup.code, backup.stdout + backup.stderr).toBe(0)
    const file = `${TEXTFILE_DIR}/toogoodtogo_backup_manual.prom`
    expect((await d.exec(['stat', '-c', '%a %U %G', file])).stdout.trim()).toBe('644 deploy deploy')
    const written = /^toogoodtogo_backup_last_success_timestamp_seconds\{type="manual"\} (\d+)$/m.exec(await d.readFile(file))?.[1]
    expect(written).toMatch(/^\d{10}$/)
    const seen = await until('the backup metric in Prometheus', async () => {
      const sample = (await query('toogoodtogo_backup_last_success_timestamp_seconds{type="manual"}'))[0]
      return sample && sample.value[1] === written ? sample : null
    }, 60_000)
    // node_exporter's own job, at the address the compose file maps for host.docker.internal
    expect(seen.metric).toMatchObject({ job: 'node', instance: 'host.docker.internal:9100' })
    expect((await query('node_textfile_scrape_error'))[0]?.value[1]).toBe('0')
    // The directory names the droplet's own backup (its deploy user's file), so this is the droplet's node_exporter.
    expect((await query('toogoodtogo_backup_last_size_bytes{type="manual"}'))[0]?.value[1]).toMatch(/^\d+$/)
  })

  it("5. node_exporter is reached through the ufw rule and nothing else: without it Prometheus's scrapes fail; from outside the subnet the port is closed", async () => {
    expect((await query('up{job="node"}'))[0]?.value[1]).toBe('1')
    const rule = ['from', '172.30.77.0/24', 'to', 'any', 'port', '9100', 'proto', 'tcp']
    expect((await d.exec(['ufw', 'delete', 'allow', ...rule])).code).toBe(0)
    // Its restart ends the scrapes' kept-alive connection: the next one is new, and meets ufw.
    expect((await d.exec(['systemctl', 'restart', 'prometheus-node-exporter.service'])).code).toBe(0)
    await until('up{job="node"} 0 without the rule', async () => ((await query('up{job="node"}'))[0]?.value[1] === '0' ? true : null), 30_000)
    expect((await d.exec(['ufw', 'allow', ...rule])).code).toBe(0)
    await until('up{job="node"} 1 with the rule back', async () => ((await query('up{job="node"}'))[0]?.value[1] === '1' ? true : null), 30_000)
    // From this host (the docker bridge, outside 172.30.77.0/24), the droplet's port 9100 answers nothing.
    const bridgeIp = spawnSync('docker', ['inspect', '--format', '{{.NetworkSettings.IPAddress}}', d.name], { encoding: 'utf8' }).stdout.trim()
    const outside = spawnSync('curl', ['-s', '-o', '/dev/null', '--max-time', '3', `http://${bridgeIp}:9100/metrics`], { encoding: 'utf8' })
    expect(outside.status, 'curl from outside the monitoring subnet should time out').toBe(28)
    // while on the droplet itself it serves (the port is open, only filtered)
    expect((await d.exec(['bash', '-c', '(exec 3<>/dev/tcp/127.0.0.1/9100) && echo open'])).stdout.trim()).toBe('open')
  })

  it("6. why the compose file maps host.docker.internal to the monitoring network's gateway, not Docker's host-gateway: only the first leaves Prometheus from 172.30.77.0/24", () => {
    // Prometheus's routing table: the monitoring subnet is on one interface, directly; the default
    // route (which host-gateway, docker0's address, would take) is on the other network's.
    const routes = spawnSync('docker', ['exec', containerOf(d, 'prometheus'), 'cat', '/proc/net/route'], { encoding: 'utf8' })
    expect(routes.status, routes.stderr).toBe(0)
    const rows = routes.stdout.trim().split('\n').slice(1).map((line) => line.trim().split(/\s+/))
    const monitoring = rows.find((r) => r[1] === hexAddress('172.30.77.0') && r[7] === hexAddress('255.255.255.0'))
    const fallback = rows.find((r) => r[1] === '00000000')
    expect(monitoring?.[2], routes.stdout).toBe('00000000')
    expect(fallback?.[0], routes.stdout).toBeDefined()
    expect(fallback?.[0]).not.toBe(monitoring?.[0])
  })

  it('7. RedisDown fires after its minute and reaches the webhook receiver; status.sh lists it among the firing alerts', async () => {
    const message = await until('RedisDown at the webhook receiver', async () => received.find((b) => b.includes('FIRING: RedisDown')) ?? null, 180_000)
    const waited = Math.round((Date.now() - redisStoppedAt) / 1000)
    process.stdout.write(`[monitoring e2e] RedisDown reached the receiver ${waited}s after docker stop\n`)
    // `for: 1m`: never before the minute (plus a scrape), and Alertmanager's group_wait after it
    expect(waited).toBeGreaterThanOrEqual(60)
    const slack = JSON.parse(message) as { attachments?: { title?: string; text?: string }[] }
    expect(slack.attachments?.[0]).toMatchObject({ title: 'FIRING: RedisDown', text: expect.stringContaining('Redis is down') })

    const status = await d.exec([script('status')], { env: scriptEnv() })
    expect(status.code, status.stdout + status.stderr).toBe(1)
    expect(status.stdout).toMatch(/Alerts\s+\d+ firing/)
    expect(status.stdout).toMatch(/RedisDown \[critical\] Redis is down \(since /)
    expect(status.stdout).toMatch(/Needs attention: .*alert\(s\) firing/)
  })

  it('8. deploy.sh of the next release keeps every monitoring container (its `up --remove-orphans` names the monitoring file); Redis back, RedisDown resolves', async () => {
    const before = monitoringContainers(d)
    expect(before.split('\n')).toHaveLength(MONITORING_SERVICES.length)
    const deployed = await d.exec([script('deploy'), 'v1.1.0', '--yes'], { user: 'deploy', env: scriptEnv() })
    expect(deployed.code, deployed.stdout + deployed.stderr).toBe(0)
    expect(deployed.stdout).toMatch(/Deployment successful: v1\.1\.0/)
    // the same containers, never recreated nor restarted, still running
    expect(monitoringContainers(d)).toBe(before)
    expect(before).not.toMatch(/ (exited|created|restarting)$/m)
    expect(runningServices(d)).toEqual(['alertmanager', 'bot', 'postgres', 'postgres-exporter', 'prometheus', 'redis', 'redis-exporter'])
    // deploy started Redis again (its pre-deployment step): the alert resolves and leaves status.sh.
    await until('RedisDown resolved', async () => ((await query('ALERTS{alertname="RedisDown"}')).length === 0 ? true : null), 60_000)
    await until('status.sh without RedisDown', async () => {
      const status = await d.exec([script('status')], { env: scriptEnv() })
      return status.stdout.includes('RedisDown') ? null : status
    }, 60_000)
  })
})

/** Compose services with a running container in the droplet's stack, sorted. */
function runningServices(d: Droplet): string[] {
  const out = spawnSync('docker', ['ps', '--filter', `label=com.docker.compose.project=${d.name}`, '--format', '{{.Label "com.docker.compose.service"}}'], { encoding: 'utf8' }).stdout
  return out.split('\n').filter(Boolean).sort()
}

function containerOf(d: Droplet, service: string): string {
  const id = spawnSync('docker', ['ps', '-aq', '--filter', `label=com.docker.compose.project=${d.name}`, '--filter', `label=com.docker.compose.service=${service}`], { encoding: 'utf8' }).stdout.trim()
  if (!/^[0-9a-f]+$/.test(id)) throw new Error(`no single ${service} container in ${d.name}: "${id}"`)
  return id
}

/** Id, start time and state of each monitoring container. */
function monitoringContainers(d: Droplet): string {
  return MONITORING_SERVICES.map((service) => spawnSync('docker', ['inspect', '--format', `${service} {{.Id}} {{.State.StartedAt}} {{.State.Status}}`, containerOf(d, service)], { encoding: 'utf8' }).stdout.trim()).join('\n')
}

async function until<T>(what: string, probe: () => Promise<T | null>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe().catch(() => null)
    if (value !== null) return value
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}`)
    await sleep(1000)
  }
}

/** An IPv4 address as /proc/net/route prints it (little-endian hex). */
function hexAddress(ip: string): string {
  return ip.split('.').reverse().map((o) => Number(o).toString(16).padStart(2, '0')).join('').toUpperCase()
}
