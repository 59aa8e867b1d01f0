import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TOOLKIT_DIR } from '../../lib/core/config.ts'
import { recordBackup, recordDeploy, recordDrill, recordHealth } from '../../lib/core/metrics.ts'
import { tempDir } from '../support/scripts.ts'

// The whole path of an alert with the real Debian binaries, no Docker: lib/core/metrics.ts writes
// textfile metrics -> node_exporter's textfile collector parses them -> Prometheus scrapes them
// and evaluates deployment/monitoring/rules -> Alertmanager, with deployment/monitoring/alertmanager.yml
// (only the secret file's path and group_wait changed), posts to the Slack-compatible webhook,
// here a local HTTP server. Packages: prometheus, prometheus-alertmanager, prometheus-node-exporter
// (.ci/run installs them); a missing one fails the test, naming it.
const MONITORING = path.join(TOOLKIT_DIR, 'deployment', 'monitoring')
const dir = tempDir('monitoring-pipeline-')
const textfiles = path.join(dir, 'textfile')
fs.mkdirSync(textfiles)
const target = { METRICS_DIR: textfiles }
const children: ChildProcess[] = []
const received: string[] = []
let receiver: http.Server
let prometheusUrl = ''

function binary(command: string, pkg: string): string {
  const found = spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' })
  if (found.status !== 0) throw new Error(`${command} is not installed: apt-get install ${pkg} (bash .ci/run installs it)`)
  return found.stdout.trim()
}

async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

function start(argv: string[], name: string): void {
  const [command = '', ...args] = argv
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr?.on('data', (d) => (stderr = (stderr + String(d)).slice(-4000)))
  child.on('exit', (code) => {
    if (code !== null && code !== 0) process.stderr.write(`${name} exited ${code}: ${stderr}\n`)
  })
  children.push(child)
}

async function until<T>(what: string, probe: () => Promise<T | null>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe().catch(() => null)
    if (value !== null) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(500)
  }
}

interface Alert { labels: Record<string, string>; state: string }
async function alerts(): Promise<Alert[]> {
  const body = (await (await fetch(`${prometheusUrl}/api/v1/alerts`)).json()) as { data: { alerts: Alert[] } }
  return body.data.alerts
}

async function query(expr: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> {
  const body = (await (await fetch(`${prometheusUrl}/api/v1/query?query=${encodeURIComponent(expr)}`)).json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } }
  return body.data.result
}

beforeAll(async () => {
  const promBin = binary('prometheus', 'prometheus')
  const amBin = binary('prometheus-alertmanager', 'prometheus-alertmanager')
  const nodeBin = binary('prometheus-node-exporter', 'prometheus-node-exporter')

  receiver = http.createServer((req, res) => {
    let body = ''
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      received.push(body)
      res.end('ok')
    })
  })
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve))
  const webhookUrl = `http://127.0.0.1:${(receiver.address() as net.AddressInfo).port}/slack`

  const [amPort, nodePort, promPort] = [await freePort(), await freePort(), await freePort()]
  const secret = path.join(dir, 'slack_webhook_url')
  fs.writeFileSync(secret, webhookUrl + '\n', { mode: 0o600 })
  const amConfig = path.join(dir, 'alertmanager.yml')
  const original = fs.readFileSync(path.join(MONITORING, 'alertmanager.yml'), 'utf8')
  expect(original).toContain('/etc/alertmanager/secrets/slack_webhook_url')
  fs.writeFileSync(amConfig, original.replaceAll('/etc/alertmanager/secrets/slack_webhook_url', secret).replace('group_wait: 30s', 'group_wait: 1s'))

  const promConfig = path.join(dir, 'prometheus.yml')
  fs.writeFileSync(promConfig, [
    'global: { scrape_interval: 1s, evaluation_interval: 1s }',
    `rule_files: ['${path.join(MONITORING, 'rules', 'toogoodtogo.rules.yml')}']`,
    `alerting: { alertmanagers: [ { static_configs: [ { targets: ['127.0.0.1:${amPort}'] } ] } ] }`,
    `scrape_configs: [ { job_name: node, static_configs: [ { targets: ['127.0.0.1:${nodePort}'] } ] } ]`,
    '',
  ].join('\n'))

  start([nodeBin, `--web.listen-address=127.0.0.1:${nodePort}`, '--collector.disable-defaults', '--collector.textfile', `--collector.textfile.directory=${textfiles}`], 'node_exporter')
  start([amBin, `--config.file=${amConfig}`, `--storage.path=${path.join(dir, 'am')}`, `--web.listen-address=127.0.0.1:${amPort}`, '--cluster.listen-address='], 'alertmanager')
  start([promBin, `--config.file=${promConfig}`, `--storage.tsdb.path=${path.join(dir, 'prom')}`, `--web.listen-address=127.0.0.1:${promPort}`], 'prometheus')
  prometheusUrl = `http://127.0.0.1:${promPort}`
  await until('Prometheus ready', async () => ((await fetch(`${prometheusUrl}/-/ready`)).ok ? true : null))
})

afterAll(async () => {
  for (const child of children) child.kill('SIGTERM')
  await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((resolve) => c.once('exit', resolve)) : null)))
  receiver?.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

describe('metrics -> node_exporter -> Prometheus -> Alertmanager -> webhook', () => {
  it('node_exporter reads every file the toolkit writes, the same family from two files included', async () => {
    const now = new Date()
    recordBackup(target, { type: 'scheduled', finishedAt: new Date(now.getTime() - 48 * 3600_000), sizeBytes: 1000 })
    recordBackup(target, { type: 'manual', finishedAt: new Date(now.getTime() - 30 * 3600_000), sizeBytes: 2000 })
    recordDrill(target, { finishedAt: now, passed: true })
    recordHealth(target, now, [{ service: 'bot', healthy: true }])
    recordDeploy(target, { event: 'deploy', outcome: 'rolled_back', finishedAt: now, downtimeSeconds: 1.5, running: { version: 'v1.1.0', deployedAt: now } })
    const series = await until('both backup series scraped', async () => {
      const r = await query('toogoodtogo_backup_last_success_timestamp_seconds')
      return r.length === 2 ? r : null
    })
    expect(series.map((s) => s.metric.type).sort()).toEqual(['manual', 'scheduled'])
    expect((await query('node_textfile_scrape_error'))[0]?.value[1]).toBe('0')
    expect((await query('toogoodtogo_release_info'))[0]?.metric.version).toBe('v1.1.0')
  })

  it('a stale backup and a rolled-back deploy fire, and reach the Slack-compatible webhook', async () => {
    const firing = await until('BackupMissing and DeployFailed firing', async () => {
      const names = (await alerts()).filter((a) => a.state === 'firing').map((a) => a.labels.alertname ?? '')
      return names.includes('BackupMissing') && names.includes('DeployFailed') ? names : null
    })
    // the drill is fresh and passed, the bot healthy: those stay quiet
    expect(firing).not.toContain('RestoreDrillFailed')
    expect(firing).not.toContain('BotUnhealthy')
    const message = await until('the webhook to receive BackupMissing', async () => received.find((b) => b.includes('No successful backup for over 26 hours')) ?? null)
    const slack = JSON.parse(message) as { attachments?: { title?: string; text?: string }[] }
    expect(slack.attachments?.[0]?.title).toMatch(/^FIRING: /)
    const deployFailed = await until('the webhook to receive DeployFailed', async () => received.find((b) => b.includes('The last deploy ended rolled_back')) ?? null)
    expect((JSON.parse(deployFailed) as { attachments?: { title?: string }[] }).attachments?.[0]?.title).toMatch(/^FIRING: /)
  })

  it('a fresh backup clears BackupMissing', async () => {
    recordBackup(target, { type: 'scheduled', finishedAt: new Date(), sizeBytes: 3000 })
    const names = await until('BackupMissing to clear', async () => {
      const now = (await alerts()).map((a) => a.labels.alertname ?? '')
      return now.includes('BackupMissing') ? null : now
    })
    expect(names).not.toContain('BackupMissing')
  })
})
