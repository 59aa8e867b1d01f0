import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { isInstalledStatus, parseStatOverride } from '../../lib/commands/apt.ts'
import { composeBase, type ComposeProject } from '../../lib/commands/compose.ts'
import { parseUfwAdded, monitoringFirewallCommands, nodeExporterRule } from '../../lib/commands/ufw.ts'
import { loadConfig, MONITORING_COMPOSE_FILE, TOOLKIT_DIR } from '../../lib/core/config.ts'
import { validateDeploymentConfig } from '../../lib/core/deployment-config.ts'
import { alertWebhookAnswer, envChanges, monitoringEnvValues, monitoringProblems, monitoringServices, monitoringStack, monitoringWanted, subnetGateway, withMonitoringFlag } from '../../lib/setup/monitoring.ts'
import { renderUnits, type UnitValues } from '../../lib/setup/units.ts'

// setup-droplet --monitoring's decisions and commands, as data (lib/setup/monitoring.ts); the
// droplet e2e (test/e2e/monitoring.test.ts) runs them for real.
const DEPLOY = '/opt/toogoodtogo'
const CFG = { METRICS_DIR: '/var/lib/prometheus/node-exporter', DEPLOY_DIR: DEPLOY }

describe('on or off', () => {
  it('--monitoring is MONITORING_ENABLED=true for the run; the run\'s answer wins over the kept file', () => {
    expect(withMonitoringFlag({ A: '1' }, true)).toEqual({ A: '1', MONITORING_ENABLED: 'true' })
    expect(withMonitoringFlag({ MONITORING_ENABLED: 'false' }, false)).toEqual({ MONITORING_ENABLED: 'false' })
    expect(monitoringWanted({ MONITORING_ENABLED: 'true' }, {})).toBe(true)
    expect(monitoringWanted({}, { MONITORING_ENABLED: 'true' })).toBe(true)
    expect(monitoringWanted({ MONITORING_ENABLED: 'false' }, { MONITORING_ENABLED: 'true' })).toBe(false)
    expect(monitoringWanted({}, {})).toBe(false)
  })
})

describe('.env.production values', () => {
  it('defaults: Alertmanager on the droplet\'s loopback, the secrets beside .env.production, the compose file\'s node_exporter address', () => {
    expect(monitoringEnvValues({}, {}, DEPLOY)).toEqual({
      MONITORING_ENABLED: 'true', ALERTMANAGER_URL: 'http://127.0.0.1:9093', ALERTMANAGER_SECRETS_DIR: '/opt/toogoodtogo/monitoring-secrets', NODE_EXPORTER_HOST: null,
    })
  })
  it('a kept value stays; an answer fills a missing one; ALERTMANAGER_PORT moves the URL; another subnet brings its gateway', () => {
    const v = monitoringEnvValues({ ALERTMANAGER_PORT: '19093', MONITORING_SUBNET: '10.77.0.0/16', ALERTMANAGER_SECRETS_DIR: '/srv/given' }, { ALERTMANAGER_SECRETS_DIR: '/srv/kept' }, DEPLOY)
    expect(v).toEqual({ MONITORING_ENABLED: 'true', ALERTMANAGER_URL: 'http://127.0.0.1:19093', ALERTMANAGER_SECRETS_DIR: '/srv/kept', NODE_EXPORTER_HOST: '10.77.0.1' })
    expect(monitoringEnvValues({ NODE_EXPORTER_HOST: '172.30.77.250' }, {}, DEPLOY).NODE_EXPORTER_HOST).toBe('172.30.77.250')
  })
  it('only what differs is set', () => {
    expect(envChanges({ MONITORING_ENABLED: 'true', ALERTMANAGER_URL: 'http://127.0.0.1:9093' }, { MONITORING_ENABLED: 'true', ALERTMANAGER_URL: 'http://127.0.0.1:9093', NODE_EXPORTER_HOST: null })).toEqual([])
    expect(envChanges({ MONITORING_ENABLED: 'false' }, { MONITORING_ENABLED: 'true', ALERTMANAGER_SECRETS_DIR: '/s' })).toEqual([['MONITORING_ENABLED', 'true'], ['ALERTMANAGER_SECRETS_DIR', '/s']])
  })
  it("the subnet's first address is the host's on it", () => {
    expect(subnetGateway('172.30.77.0/24')).toBe('172.30.77.1')
    expect(subnetGateway('10.20.30.40/16')).toBe('10.20.0.1')
    expect(subnetGateway('192.168.1.128/25')).toBe('192.168.1.129')
    for (const bad of ['172.30.77.0', '300.1.1.0/24', '10.0.0.0/31', 'fd00::/64']) expect(subnetGateway(bad), bad).toBeNull()
  })
  it('the template\'s validation knows the new keys (never quoting a value)', () => {
    const problems = validateDeploymentConfig({ MONITORING_ENABLED: 'yes', ALERTMANAGER_URL: 'localhost:9093', ALERTMANAGER_SECRETS_DIR: 'secrets', MONITORING_SUBNET: '172.30.77.0', NODE_EXPORTER_HOST: 'host-gateway' }, 'polling')
    expect(problems.filter((p) => p.message !== 'is missing')).toEqual([
      { key: 'MONITORING_ENABLED', message: 'must be true or false' },
      { key: 'ALERTMANAGER_URL', message: 'must be an http(s) URL such as http://127.0.0.1:9093' },
      { key: 'ALERTMANAGER_SECRETS_DIR', message: 'must be an absolute path (compose would resolve a relative one from the toolkit checkout)' },
      { key: 'MONITORING_SUBNET', message: 'must be an IPv4 network such as 172.30.77.0/24' },
      { key: 'NODE_EXPORTER_HOST', message: "must be an IPv4 address: the host's address on the monitoring network, such as 172.30.77.1" },
    ])
    const fine = validateDeploymentConfig({ MONITORING_ENABLED: 'true', ALERTMANAGER_URL: 'http://127.0.0.1:9093', ALERTMANAGER_SECRETS_DIR: '/opt/toogoodtogo/monitoring-secrets', MONITORING_SUBNET: '172.30.77.0/24', NODE_EXPORTER_HOST: '172.30.77.1' }, 'polling')
    expect(fine.filter((p) => p.message !== 'is missing')).toEqual([])
  })
})

describe('the scripts read what setup wrote', () => {
  it('.env.production\'s MONITORING_ENABLED and ALERTMANAGER_URL reach every script (status.sh asks that Alertmanager)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-monitoring-'))
    const envFile = path.join(dir, '.env.production')
    fs.writeFileSync(envFile, 'MONITORING_ENABLED=true\nALERTMANAGER_URL=http://127.0.0.1:19093\n')
    const cfg = loadConfig({ ENV_FILE: envFile })
    expect(cfg).toMatchObject({ MONITORING_ENABLED: true, ALERTMANAGER_URL: 'http://127.0.0.1:19093', composeProfiles: ['monitoring'] })
    expect(cfg.composeFiles).toEqual([expect.stringMatching(/docker-compose\.prod\.yml$/), MONITORING_COMPOSE_FILE])
    fs.rmSync(dir, { recursive: true, force: true })
  })
})

describe('what stops setup before any change', () => {
  it('no webhook URL, no file from an earlier run, no terminal', () => {
    expect(monitoringProblems({ MONITORING_ENABLED: 'true' }, {}, CFG, false, false)).toEqual([
      'monitoring needs the URL Alertmanager posts alerts to (a Slack-compatible incoming webhook): set ALERT_WEBHOOK_URL in the environment or the --env-file answers (it is written to /opt/toogoodtogo/monitoring-secrets/slack_webhook_url, never to .env.production), or run on a terminal to be asked',
    ])
    // the file an earlier run wrote, a terminal to ask on, or the toolkit's own channel will do
    expect(monitoringProblems({ MONITORING_ENABLED: 'true' }, {}, CFG, true, false)).toEqual([])
    expect(monitoringProblems({ MONITORING_ENABLED: 'true' }, {}, CFG, false, true)).toEqual([])
    expect(monitoringProblems({ MONITORING_ENABLED: 'true', NOTIFY_WEBHOOK_URL: 'https://hooks.example.com/x' }, {}, CFG, false, false)).toEqual([])
    // monitoring off: nothing to check
    expect(monitoringProblems({}, {}, CFG, false, false)).toEqual([])
  })
  it('a bad URL, another METRICS_DIR (the units would not write where node_exporter reads), a bad subnet', () => {
    const problems = monitoringProblems({ MONITORING_ENABLED: 'true', ALERT_WEBHOOK_URL: 'hooks.example.com/x', MONITORING_SUBNET: '172.30.77.0/33' }, {}, { ...CFG, METRICS_DIR: '/srv/metrics' }, false, false)
    expect(problems).toEqual([
      "METRICS_DIR=/srv/metrics: the units write metrics to node_exporter's textfile directory /var/lib/prometheus/node-exporter; unset METRICS_DIR",
      'MONITORING_SUBNET=172.30.77.0/33 is not an IPv4 network such as 172.30.77.0/24',
      'ALERT_WEBHOOK_URL must be a URL such as https://hooks.slack.com/services/...',
    ])
  })
  it('ALERT_WEBHOOK_URL first, else the scripts\' NOTIFY_WEBHOOK_URL', () => {
    expect(alertWebhookAnswer({ ALERT_WEBHOOK_URL: 'https://a', NOTIFY_WEBHOOK_URL: 'https://n' })).toEqual({ url: 'https://a', from: 'ALERT_WEBHOOK_URL' })
    expect(alertWebhookAnswer({ NOTIFY_WEBHOOK_URL: 'https://n' })).toEqual({ url: 'https://n', from: 'NOTIFY_WEBHOOK_URL' })
    expect(alertWebhookAnswer({})).toBeNull()
  })
})

describe('the compose project', () => {
  const prod = path.join(TOOLKIT_DIR, 'deployment', 'docker-compose.prod.yml')
  const polling: ComposeProject = { flavor: 'v2', files: [prod], project: 'ttg', envFile: '/t/.env.production', profiles: [] }
  it('on: the monitoring file after the production file and its profile, on every command; off: as it was', () => {
    const on = monitoringStack(polling, true)
    expect(composeBase(on)).toEqual(['docker', 'compose', '--project-name', 'ttg', '--file', prod, '--file', MONITORING_COMPOSE_FILE, '--env-file', '/t/.env.production', '--profile', 'monitoring'])
    expect(monitoringStack(on, true)).toEqual(on)
    expect(monitoringStack(on, false)).toEqual(polling)
    expect(monitoringServices(on)).toEqual(['prometheus', 'alertmanager', 'postgres-exporter', 'redis-exporter'])
  })
  it("webhook mode adds nginx's exporter; the operator's own profiles stay", () => {
    const webhook = monitoringStack({ ...polling, profiles: ['monitoring-grafana', 'webhook'] }, true)
    expect(webhook.profiles).toEqual(['monitoring-grafana', 'webhook', 'monitoring', 'monitoring-webhook'])
    expect(monitoringServices(webhook)).toContain('nginx-exporter')
    expect(monitoringStack(webhook, false).profiles).toEqual(['monitoring-grafana', 'webhook'])
  })
})

describe('the firewall rule for node_exporter', () => {
  // `ufw show added` as ufw 0.36 (Debian 12) prints it
  const shown = parseUfwAdded('Added user rules (see \'ufw status\' for running firewall):\nufw allow 22/tcp\nufw allow from 172.30.77.0/24 to any port 9100 proto tcp\n')
  it('added once, from the monitoring subnet only', () => {
    expect(nodeExporterRule('172.30.77.0/24')).toBe('allow from 172.30.77.0/24 to any port 9100 proto tcp')
    expect(monitoringFirewallCommands(['allow 22/tcp'], true, '172.30.77.0/24')).toEqual([['ufw', 'allow', 'from', '172.30.77.0/24', 'to', 'any', 'port', '9100', 'proto', 'tcp']])
    expect(monitoringFirewallCommands(shown, true, '172.30.77.0/24')).toEqual([])
  })
  it("another subnet's rule goes when the subnet changes; every one goes when monitoring is off", () => {
    expect(monitoringFirewallCommands(shown, true, '10.77.0.0/16').map((argv) => argv.join(' '))).toEqual([
      'ufw allow from 10.77.0.0/16 to any port 9100 proto tcp',
      'ufw delete allow from 172.30.77.0/24 to any port 9100 proto tcp',
    ])
    expect(monitoringFirewallCommands(shown, false, '172.30.77.0/24').map((argv) => argv.join(' '))).toEqual(['ufw delete allow from 172.30.77.0/24 to any port 9100 proto tcp'])
    expect(monitoringFirewallCommands(['allow 22/tcp'], false, '172.30.77.0/24')).toEqual([])
  })
})

describe('node_exporter on the host', () => {
  it('dpkg: installed or not; the textfile directory for the deploy user through dpkg-statoverride', () => {
    expect(isInstalledStatus('install ok installed')).toBe(true)
    expect(isInstalledStatus('deinstall ok config-files')).toBe(false)
    expect(parseStatOverride('root deploy 2775 /var/lib/prometheus/node-exporter\n')).toEqual({ owner: 'root', group: 'deploy', mode: '2775' })
    expect(parseStatOverride('')).toBeNull()
  })
})

describe('the health-metrics units', () => {
  const values: UnitValues = {
    TOOLKIT_DIR: '/opt/toogoodtogo/deployment', DEPLOY_DIR: DEPLOY, ENV_FILE: `${DEPLOY}/.env.production`, BACKUP_DIR: '/opt/backups/postgres',
    LOG_FILE: '/var/log/toogoodtogo/deployment.log', LOG_DIR: '/var/log/toogoodtogo', COMPOSE_PROJECT_NAME: 'toogoodtogo', COMPOSE_FILE: '/opt/toogoodtogo/deployment/deployment/docker-compose.prod.yml',
    DEPLOY_USER: 'deploy', TSX: '/opt/toogoodtogo/deployment/node_modules/.bin/tsx', PATH: '/usr/bin:/bin',
  }
  it('rendered with monitoring only, every placeholder filled', () => {
    const names = (monitoring: boolean) => renderUnits(values, { monitoring }).map((f) => path.basename(f.file))
    expect(names(false)).not.toContain('toogoodtogo-health-metrics.timer')
    expect(names(true)).toEqual(expect.arrayContaining(['toogoodtogo-health-metrics.service', 'toogoodtogo-health-metrics.timer']))
    const service = renderUnits(values, { monitoring: true }).find((f) => f.file.endsWith('toogoodtogo-health-metrics.service'))
    expect(service?.content).toContain('ExecStart=/opt/toogoodtogo/deployment/node_modules/.bin/tsx /opt/toogoodtogo/deployment/scripts/health-check.ts')
    expect(service?.content).toContain('User=deploy')
    expect(service?.content).not.toMatch(/@[A-Z_]+@/)
  })
})
