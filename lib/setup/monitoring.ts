import fs from 'node:fs'
import path from 'node:path'
import { aptInstall, isInstalled, parseStatOverride, type StatOverride } from '../commands/apt.ts'
import { composeBase, composeEnv, type ComposeProject } from '../commands/compose.ts'
import { systemctl } from '../commands/systemd.ts'
import { monitoringFirewallCommands, NODE_EXPORTER_PORT, ufwAdded } from '../commands/ufw.ts'
import { writeFileAtomic } from '../core/atomic-file.ts'
import { type Config, MONITORING_COMPOSE_FILE, stackProfiles } from '../core/config.ts'
import { setEnvValue } from '../core/env-file.ts'
import { OpsError } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { ask, canPrompt } from '../core/prompt.ts'
import { looksTransient, retry } from '../core/retry.ts'
import { $, $read, isDryRun } from '../core/shell.ts'
import { HEALTH_METRICS_TIMER, SYSTEMD_DIR } from './units.ts'
import { ensureDir, handOver } from './hand-over.ts'

// The opt-in monitoring stack on a droplet (setup-droplet --monitoring; README "Monitoring and
// status"). Prometheus, Alertmanager and the exporters are compose services
// (deployment/monitoring); what lives on the host is set up here: Debian's node_exporter (it must
// see the host's filesystems and memory, and reads the scripts' textfile metrics), the one ufw
// rule that lets Prometheus reach it, the file holding Alertmanager's webhook URL, and the
// .env.production lines that make every compose command include the monitoring file.
// Builders and decisions are pure (test/unit/setup-monitoring.test.ts); configureMonitoring runs them.

export const NODE_EXPORTER_PACKAGE = 'prometheus-node-exporter'
export const NODE_EXPORTER_UNIT = 'prometheus-node-exporter.service'
/** The package's --collector.textfile.directory default, and METRICS_DIR's: the scripts write there. */
export const TEXTFILE_DIR = '/var/lib/prometheus/node-exporter'
/** docker-compose.monitoring.yml's default for MONITORING_SUBNET */
export const DEFAULT_MONITORING_SUBNET = '172.30.77.0/24'
/** The user Alertmanager runs as in its image (prom/alertmanager: nobody). */
export const ALERTMANAGER_UID = '65534'
/** alertmanager.yml's api_url_file, inside ALERTMANAGER_SECRETS_DIR */
export const WEBHOOK_URL_FILE = 'slack_webhook_url'

// ---- what is wanted ------------------------------------------------------------------------------

/** --monitoring is MONITORING_ENABLED=true given for this run: it wins over the answers file, as the environment does. */
export function withMonitoringFlag(env: NodeJS.ProcessEnv, flag: boolean): NodeJS.ProcessEnv {
  return flag ? { ...env, MONITORING_ENABLED: 'true' } : env
}

/** The answer given for this run (flag, environment, answers file), else what .env.production says. */
export function monitoringWanted(given: Record<string, string>, kept: Record<string, string>): boolean {
  return (given.MONITORING_ENABLED ?? kept.MONITORING_ENABLED) === 'true'
}

/** The URL Alertmanager posts to: ALERT_WEBHOOK_URL, else the scripts' own Slack-compatible channel. */
export function alertWebhookAnswer(given: Record<string, string>): { url: string; from: string } | null {
  if (given.ALERT_WEBHOOK_URL) return { url: given.ALERT_WEBHOOK_URL, from: 'ALERT_WEBHOOK_URL' }
  if (given.NOTIFY_WEBHOOK_URL) return { url: given.NOTIFY_WEBHOOK_URL, from: 'NOTIFY_WEBHOOK_URL' }
  return null
}

export function webhookUrlProblem(url: string): string | null {
  try {
    const parsed = new URL(url)
    return parsed.protocol === 'https:' || parsed.protocol === 'http:' ? null : 'must be an http(s) URL'
  } catch {
    return 'must be a URL such as https://hooks.slack.com/services/...'
  }
}

/** `172.30.77.0/24` -> `172.30.77.1`, the address Docker gives the host on that network; null for anything but an IPv4 CIDR. */
export function subnetGateway(cidr: string): string | null {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr)
  if (!match) return null
  const octets = match.slice(1, 5).map(Number)
  const bits = Number(match[5])
  if (octets.some((o) => o > 255) || bits < 8 || bits > 30) return null
  const address = octets.reduce((n, o) => n * 256 + o, 0)
  const network = address - (address % 2 ** (32 - bits))
  const gateway = network + 1
  return [24, 16, 8, 0].map((shift) => Math.floor(gateway / 2 ** shift) % 256).join('.')
}

/** The .env.production keys monitoring sets; MONITORING_ENABLED is the switch every script reads. */
export interface MonitoringEnv {
  MONITORING_ENABLED: 'true'
  ALERTMANAGER_URL: string
  ALERTMANAGER_SECRETS_DIR: string
  /** null: the compose file's default (the default subnet's gateway) */
  NODE_EXPORTER_HOST: string | null
}

/**
 * The .env.production values monitoring needs. A value the file already has is kept (as setup
 * keeps the whole file); a missing one comes from this run's answers or its default.
 */
export function monitoringEnvValues(given: Record<string, string>, kept: Record<string, string>, deployDir: string): MonitoringEnv {
  const value = (key: string) => kept[key] || given[key] || null
  const subnet = value('MONITORING_SUBNET') ?? DEFAULT_MONITORING_SUBNET
  return {
    MONITORING_ENABLED: 'true',
    // status.sh lists firing alerts from here: the port compose publishes on the droplet's loopback
    ALERTMANAGER_URL: value('ALERTMANAGER_URL') ?? `http://127.0.0.1:${value('ALERTMANAGER_PORT') ?? '9093'}`,
    // By absolute path: compose's default is relative to the toolkit checkout, which may live elsewhere.
    ALERTMANAGER_SECRETS_DIR: value('ALERTMANAGER_SECRETS_DIR') ?? path.join(deployDir, 'monitoring-secrets'),
    // The compose file's default is the default subnet's gateway; another subnet needs its own.
    NODE_EXPORTER_HOST: value('NODE_EXPORTER_HOST') ?? (subnet === DEFAULT_MONITORING_SUBNET ? null : subnetGateway(subnet)),
  }
}

/** The KEY=value lines to set so the file says what is wanted (none when it already does). */
export function envChanges(kept: Record<string, string>, wanted: Partial<Record<string, string | null>>): [string, string][] {
  return Object.entries(wanted).filter((e): e is [string, string] => e[1] !== null && kept[e[0]] !== e[1])
}

/** Everything that can be known wrong before setup changes anything. */
export function monitoringProblems(given: Record<string, string>, kept: Record<string, string>, cfg: Pick<Config, 'METRICS_DIR' | 'DEPLOY_DIR'>, secretFileExists: boolean, terminal: boolean): string[] {
  if (!monitoringWanted(given, kept)) return []
  const problems: string[] = []
  if (cfg.METRICS_DIR !== TEXTFILE_DIR) problems.push(`METRICS_DIR=${cfg.METRICS_DIR}: the units write metrics to node_exporter's textfile directory ${TEXTFILE_DIR}; unset METRICS_DIR`)
  const subnet = kept.MONITORING_SUBNET || given.MONITORING_SUBNET
  if (subnet && !subnetGateway(subnet)) problems.push(`MONITORING_SUBNET=${subnet} is not an IPv4 network such as ${DEFAULT_MONITORING_SUBNET}`)
  const answer = alertWebhookAnswer(given)
  const wrong = answer && webhookUrlProblem(answer.url)
  if (answer && wrong) problems.push(`${answer.from} ${wrong}`)
  if (!answer && !secretFileExists && !terminal) {
    const dir = monitoringEnvValues(given, kept, cfg.DEPLOY_DIR).ALERTMANAGER_SECRETS_DIR
    problems.push(`monitoring needs the URL Alertmanager posts alerts to (a Slack-compatible incoming webhook): set ALERT_WEBHOOK_URL in the environment or the --env-file answers (it is written to ${dir}/${WEBHOOK_URL_FILE}, never to .env.production), or run on a terminal to be asked`)
  }
  return problems
}

/** The profiles the monitoring switch implies (stackProfiles); others (monitoring-grafana) are the operator's. */
const IMPLIED_PROFILES = ['monitoring', 'monitoring-webhook']

/** The compose project with or without the monitoring file and profiles, whatever it was built with. */
export function monitoringStack(p: ComposeProject, on: boolean): ComposeProject {
  const [base, ...others] = p.files
  const files: [string, ...string[]] = [base, ...others.filter((f) => f !== MONITORING_COMPOSE_FILE), ...(on ? [MONITORING_COMPOSE_FILE] : [])]
  const kept = p.profiles.filter((profile) => !IMPLIED_PROFILES.includes(profile))
  return { ...p, files, profiles: stackProfiles(kept.join(','), { webhook: kept.includes('webhook'), monitoring: on }) }
}

/** The services the monitoring profiles add (nginx's exporter in webhook mode only). */
export function monitoringServices(p: ComposeProject): string[] {
  return ['prometheus', 'alertmanager', 'postgres-exporter', 'redis-exporter', ...(p.profiles.includes('monitoring-webhook') ? ['nginx-exporter'] : [])]
}

// ---- the step ----------------------------------------------------------------------------------------

export interface MonitoringStep {
  /** this run's answers (environment over --env-file, --monitoring folded in) */
  given: Record<string, string>
  envFile: string
  /** .env.production as configureEnvironment left it */
  env: Record<string, string>
  cfg: Pick<Config, 'DEPLOY_DIR'>
  deployUser: string
  compose: ComposeProject
}

/** Stops setup before its first change when monitoring is wanted but cannot be set up as given. */
export function checkMonitoringAnswers(given: Record<string, string>, kept: Record<string, string>, cfg: Pick<Config, 'METRICS_DIR' | 'DEPLOY_DIR'>): void {
  const secretFile = path.join(monitoringEnvValues(given, kept, cfg.DEPLOY_DIR).ALERTMANAGER_SECRETS_DIR, WEBHOOK_URL_FILE)
  const problems = monitoringProblems(given, kept, cfg, fs.existsSync(secretFile), canPrompt())
  if (problems.length) throw new OpsError('config', `Monitoring: ${problems.join('; ')}. Nothing was changed`)
}

/**
 * Monitoring on: node_exporter with a textfile directory the deploy user writes, its ufw rule,
 * Alertmanager's webhook URL file, the .env.production keys, the images. Off: a rule or timer
 * left from an earlier run is removed and the file says false; node_exporter and the secret file
 * stay (harmless; turning it on again reuses them). Every part looks before it changes. Returns
 * the stack as every later compose command must name it.
 */
export async function configureMonitoring(o: MonitoringStep): Promise<ComposeProject> {
  const on = monitoringWanted(o.given, o.env)
  const subnet = o.env.MONITORING_SUBNET || o.given.MONITORING_SUBNET || DEFAULT_MONITORING_SUBNET
  if (!on) {
    await firewall(false, subnet)
    await disableHealthMetrics()
    writeEnvValues(o.envFile, o.env, { MONITORING_ENABLED: o.env.MONITORING_ENABLED === 'true' ? 'false' : null })
    log.info('Monitoring: off; setup-droplet --monitoring (or MONITORING_ENABLED=true) turns it on (README: "Monitoring and status")')
    return monitoringStack(o.compose, false)
  }
  await installNodeExporter(o.deployUser)
  await firewall(true, subnet)
  const values = monitoringEnvValues(o.given, o.env, o.cfg.DEPLOY_DIR)
  await installWebhookUrl(values.ALERTMANAGER_SECRETS_DIR, o.given)
  writeEnvValues(o.envFile, o.env, { ...values })
  const stack = monitoringStack(o.compose, true)
  const services = monitoringServices(stack)
  await retry(() => $({ env: composeEnv(stack), timeoutMs: 15 * 60_000 })`${composeBase(stack)} pull ${services}`, { isTransient: looksTransient, what: 'docker compose pull' })
  log.info(`Monitoring: on; ${services.join(', ')} start with the stack, published on 127.0.0.1 only (Alertmanager: ${values.ALERTMANAGER_URL}); reach them through an SSH tunnel (README)`)
  return stack
}

/** Once the stack runs: the health check every minute that BotUnhealthy reads. */
export async function startHealthMetrics(stack: ComposeProject): Promise<void> {
  if (!stack.profiles.includes('monitoring')) return
  await systemctl('enable', '--now', HEALTH_METRICS_TIMER)
}

async function installNodeExporter(deployUser: string): Promise<void> {
  if (await isInstalled(NODE_EXPORTER_PACKAGE)) {
    log.info(`${NODE_EXPORTER_PACKAGE} already installed`)
  } else {
    log.info(`Installing ${NODE_EXPORTER_PACKAGE} (node_exporter runs on the host, not in a container: it reads the host's filesystems and the textfile metrics)`)
    await retry(() => aptInstall([NODE_EXPORTER_PACKAGE]), { isTransient: looksTransient, what: 'apt-get install' })
  }
  // The scripts publish their metrics as the deploy user; node_exporter (user prometheus) reads
  // them. Setgid: every file written there keeps the deploy group. Through dpkg-statoverride,
  // since the package ships the directory and its next upgrade would undo a plain chmod.
  const wanted: StatOverride = { owner: 'root', group: deployUser, mode: '2775' }
  // exit 0 with `owner group mode path` when an override exists, exit 1 when none
  const listed = await $read({ nothrow: true, timeoutMs: 30_000 })`dpkg-statoverride --list ${TEXTFILE_DIR}`
  const current = listed.exitCode === 0 ? parseStatOverride(listed.stdout) : null
  if (!current || current.owner !== wanted.owner || current.group !== wanted.group || current.mode !== wanted.mode) {
    if (current) await $({ timeoutMs: 30_000 })`dpkg-statoverride --remove ${TEXTFILE_DIR}`
    log.info(`${TEXTFILE_DIR}: owner root, group ${deployUser}, mode ${wanted.mode} (dpkg-statoverride), so the scripts can publish metrics there`)
    // --update: applied to the directory now, not only at the next install
    await $({ timeoutMs: 30_000 })`dpkg-statoverride --update --add ${wanted.owner} ${wanted.group} ${wanted.mode} ${TEXTFILE_DIR}`
  }
  // The package enables it on most hosts; stated for those where it was disabled.
  await systemctl('enable', '--now', NODE_EXPORTER_UNIT)
}

async function firewall(on: boolean, subnet: string): Promise<void> {
  const commands = monitoringFirewallCommands(await ufwAdded(), on, subnet)
  for (const argv of commands) await $({ timeoutMs: 60_000 })`${argv}`
  if (on) log.info(`Firewall: port ${NODE_EXPORTER_PORT}/tcp (node_exporter) open to ${subnet} only, the monitoring network Prometheus scrapes from`)
  else if (commands.length) log.info('Firewall: removed the node_exporter rule (monitoring is off)')
}

async function disableHealthMetrics(): Promise<void> {
  // Never installed (every host that never had monitoring): nothing to ask systemd.
  if (!fs.existsSync(path.join(SYSTEMD_DIR, HEALTH_METRICS_TIMER))) return
  const enabled = await $read({ nothrow: true, timeoutMs: 60_000 })`systemctl is-enabled --quiet ${HEALTH_METRICS_TIMER}`
  if (enabled.exitCode === 0) await systemctl('disable', '--now', HEALTH_METRICS_TIMER)
}

/**
 * The webhook URL, alone in a file only Alertmanager's user can read (600): this run's answer,
 * else the file from an earlier run, else asked on a terminal. Never in .env.production or a log.
 */
async function installWebhookUrl(dir: string, given: Record<string, string>): Promise<void> {
  const file = path.join(dir, WEBHOOK_URL_FILE)
  await ensureDir(dir, 0o700, ALERTMANAGER_UID)
  const current = readOrNull(file)
  const answer = alertWebhookAnswer(given)
  if (!answer && current !== null) {
    log.info(`Alertmanager's webhook URL: kept in ${file}`)
  } else {
    const url = answer?.url ?? (await ask('Alert webhook URL (a Slack-compatible incoming webhook Alertmanager posts to)', { secret: true, validate: webhookUrlProblem }))
    if (current !== `${url}\n`) {
      log.info(`Writing Alertmanager's webhook URL${answer ? ` (${answer.from})` : ''} to ${file} (mode 600, user ${ALERTMANAGER_UID} as in Alertmanager's image)`)
      if (isDryRun()) process.stdout.write(`[dry-run] write ${file} (mode 600)\n`)
      else writeFileAtomic(file, `${url}\n`, 0o600)
    }
  }
  await handOver(ALERTMANAGER_UID, file, 0o600)
}

function writeEnvValues(envFile: string, kept: Record<string, string>, wanted: Partial<Record<string, string | null>>): void {
  for (const [key, value] of envChanges(kept, wanted)) {
    log.info(`Setting ${key}=${value} in ${envFile}${kept[key] ? ` (was ${kept[key]})` : ''}`)
    if (!isDryRun()) setEnvValue(envFile, key, value)
  }
}

function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw new OpsError('config', `Cannot read ${file}: ${(error as Error).message}`)
  }
}

/**
 * A fresh host's answer, asked with the other optional features (default no) when none was given
 * and there is a terminal; on, the values .env.production is written with.
 */
export async function collectMonitoring(v: Record<string, string>, deployDir: string): Promise<void> {
  if (v.MONITORING_ENABLED === undefined && canPrompt()) {
    const answer = await ask('Monitoring: Prometheus and Alertmanager (alerts to a Slack-compatible webhook), node_exporter on this host? (y/n)', { fallback: 'n', validate: (a) => (/^(y|yes|n|no)$/i.test(a) ? null : 'y or n') })
    v.MONITORING_ENABLED = /^y/i.test(answer) ? 'true' : 'false'
  }
  if (v.MONITORING_ENABLED !== 'true') return
  for (const [key, value] of envChanges(v, { ...monitoringEnvValues(v, {}, deployDir) })) v[key] = value
}
