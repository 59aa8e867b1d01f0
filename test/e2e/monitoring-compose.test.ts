import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ROOT } from '../support/scripts.ts'
import { composeEnvFiles } from '../support/stack.ts'

// The monitoring compose file as Compose itself reads it, together with the production file
// (`compose config` only: nothing is started, so it costs a second of the e2e tier).
const PROD = path.join(ROOT, 'deployment', 'docker-compose.prod.yml')
const MONITORING = path.join(ROOT, 'deployment', 'monitoring', 'docker-compose.monitoring.yml')
const MONITORING_SERVICES = ['alertmanager', 'grafana', 'nginx-exporter', 'postgres-exporter', 'prometheus', 'redis-exporter']

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'monitoring-compose-'))
const envFile = path.join(dir, '.env.production')
fs.writeFileSync(envFile, 'BOT_IMAGE=registry.example/bot\nAPP_VERSION=v1.0.0\nPOSTGRES_DB=toogoodtogo\nPOSTGRES_USER=toogoodtogo\nPOSTGRES_PASSWORD=pw\n')
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

interface Port { host_ip?: string; published?: string; target: number }
interface Volume { type: string; source?: string; target: string }
interface Service { ports?: Port[]; volumes?: Volume[]; profiles?: string[] }
interface Config { services: Record<string, Service> }

function config(files: string[], profiles: string[]): Config {
  const args = ['compose', '-p', 'ttgmonitoring', '--env-file', envFile, ...files.flatMap((f) => ['-f', f]), ...profiles.flatMap((p) => ['--profile', p]), 'config', '--format', 'json']
  const result = spawnSync('docker', args, { encoding: 'utf8', env: { ...process.env, ...composeEnvFiles(envFile) } })
  if (result.status !== 0) throw new Error(`docker ${args.join(' ')} failed: ${result.stderr}`)
  return JSON.parse(result.stdout) as Config
}

describe('deployment/monitoring/docker-compose.monitoring.yml', () => {
  it('adds prometheus, alertmanager and the exporters under its profiles, publishing on 127.0.0.1 only', () => {
    const cfg = config([PROD, MONITORING], ['webhook', 'monitoring', 'monitoring-webhook', 'monitoring-grafana'])
    for (const name of MONITORING_SERVICES) expect(Object.keys(cfg.services)).toContain(name)
    for (const [name, service] of Object.entries(cfg.services)) {
      if (name === 'nginx') continue // the production file's public 80/443
      for (const port of service.ports ?? []) expect(port.host_ip, `${name} publishes ${port.target} beyond 127.0.0.1`).toBe('127.0.0.1')
    }
    expect(cfg.services.prometheus?.ports?.map((p) => p.published)).toEqual(['9090'])
    expect(cfg.services.alertmanager?.ports?.map((p) => p.published)).toEqual(['9093'])
  })

  it('mounts files that exist in the checkout (paths resolve from deployment/, the first file)', () => {
    const cfg = config([PROD, MONITORING], ['webhook', 'monitoring', 'monitoring-webhook', 'monitoring-grafana'])
    const binds = Object.values(cfg.services).flatMap((s) => s.volumes ?? []).filter((v) => v.type === 'bind' && v.source?.startsWith(ROOT))
    const ours = binds.filter((v) => v.source?.includes('/deployment/monitoring/'))
    expect(ours.map((v) => v.target).sort()).toEqual(['/etc/alertmanager/alertmanager.yml', '/etc/grafana/provisioning', '/etc/nginx/conf.d/status.conf', '/etc/prometheus/prometheus.yml', '/etc/prometheus/rules', '/var/lib/grafana/dashboards'])
    for (const v of ours) expect(fs.existsSync(v.source ?? ''), `${v.source}`).toBe(true)
  })

  it('changes nothing without --profile monitoring, and nothing at all without the file', () => {
    const prodOnly = config([PROD], [])
    const withFile = config([PROD, MONITORING], [])
    expect(Object.keys(withFile.services).sort()).toEqual(Object.keys(prodOnly.services).sort())
    expect(withFile.services.bot).toEqual(prodOnly.services.bot)
    expect(withFile.services.postgres).toEqual(prodOnly.services.postgres)
    expect(withFile.services.redis).toEqual(prodOnly.services.redis)
    // the nginx exporter needs nginx: it is not started by `monitoring` alone
    expect(Object.keys(config([PROD, MONITORING], ['monitoring']).services)).not.toContain('nginx-exporter')
  })
})
