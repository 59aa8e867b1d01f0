// health-check [service] [--json] [--wait [seconds]]: the health of the stack (contract:
// health-check.sh). The same code is deploy's health gate and the post-boot check.
import { flag, stringOption, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { openContext, type Context } from '../lib/stack/context.ts'
import { withArchiving } from '../lib/db/pitr.ts'
import { OpsError, messageOf } from '../lib/core/errors.ts'
import { isoSeconds } from '../lib/core/format.ts'
import { deliveryProblem, webhookDelivery, type WebhookDelivery } from '../lib/release/webhook.ts'
import { checked, checkHealth, overall, SERVICES, waitUntilHealthy, type HealthReport, type Service, type ServiceHealth } from '../lib/stack/health.ts'
import { addResources } from '../lib/release/resources.ts'
import { log } from '../lib/core/log.ts'
import { isEntryPoint, runMain } from '../lib/core/main.ts'
import { recordHealth } from '../lib/core/metrics.ts'
import { swarmHealth } from '../lib/swarm/cluster.ts'

const spec = {
  name: 'health-check',
  summary: 'Check the health of the bot, postgres, redis and (webhook mode) nginx',
  usage: 'health-check [bot|postgres|redis|nginx] [--json] [--wait [SECONDS]]',
  positionals: [{ name: 'service', description: 'check only this service (default: all)' }],
  maxPositionals: 1,
  options: {
    json: { type: 'boolean', description: "Print the contract's JSON on stdout (log lines go to stderr)" },
    wait: { type: 'string', optionalNumber: true, value: 'SECONDS', description: 'Poll until healthy, up to SECONDS (default HEALTH_CHECK_TIMEOUT)' },
  },
  exitCodes: [
    [0, 'All checked services healthy'],
    [1, 'One or more services unhealthy or degraded'],
    [2, 'Health check timeout (a query took over 10 s, or --wait ran out)'],
  ],
  env: [
    ['HEALTH_CHECK_TIMEOUT', 'default for --wait, seconds (120)'],
    ['COMPOSE_PROJECT_NAME', 'the stack to check (toogoodtogo)'],
  ],
  notes: [
    'The bot is read through its internal /health (port 8000 inside the container) and its heartbeat',
    'file; a bot whose redis or postgres connection fails is degraded. nginx runs only in webhook mode',
    'and is reported as not deployed, not as a failure, otherwise. With PITR_ENABLED=true postgres is',
    'degraded while WAL archiving fails or a segment waits longer than PITR_ARCHIVE_TIMEOUT + 60 s;',
    'the notification channels are told once when it starts and once when it has caught up. A server',
    'that has had no checkpoint since it started gets one (archive_timeout applies only after it).',
    'In webhook mode (TELEGRAM_WEBHOOK_URL) the bot also shows what Telegram\'s getWebhookInfo says:',
    'pending updates and the last delivery error; an error in the last 5 minutes, or a webhook set to',
    'another URL, makes it degraded.',
    'On a Docker Swarm manager a last line, swarm, covers the nodes: degraded naming a node that is down',
    'or a manager that is unreachable, unhealthy when the nodes cannot be listed (no leader).',
  ],
  examples: ['health-check', 'health-check redis', 'health-check --json', 'health-check --wait 300'],
} satisfies CliSpec

// The CLI, when this file is the one node started; a test imports the command without running it.
if (isEntryPoint(import.meta.url)) await runMain(spec, { exitCodes: { timeout: 2 }, jsonFlag: 'json', asDeployUser: true, failureNotice: false }, healthCheck)

export async function healthCheck(cli: ParsedCli<typeof spec>): Promise<void> {
  const ctx = await openContext()
  const services = servicesToCheck(cli)
  log.info('Checking service health')
  const waitSeconds = waitOption(cli, ctx.cfg.HEALTH_CHECK_TIMEOUT)
  const { report, waitedOut } = waitSeconds === null
    ? { report: await checkHealth(ctx, services), waitedOut: false }
    : await waitUntilHealthy(ctx, services, waitSeconds * 1000)
  await addArchiving(ctx, report)
  await addWebhookDelivery(ctx, report)
  if (services === SERVICES) await addSwarmNodes(report)
  // restart_count and memory_usage_mb (the Service Instance's): one `docker stats` sample, for the JSON only
  if (flag(cli, 'json')) await addResources(ctx, report)
  printReport(report)
  // Only a check of every service is published: `health-check redis` must not make the others'
  // gauges vanish. The BotUnhealthy alert reads it (deployment/monitoring/rules).
  if (services === SERVICES) {
    recordHealth(ctx.cfg, new Date(), checked(report.services).filter(([, h]) => h.status !== 'not_deployed').map(([service, h]) => ({ service, healthy: h.status === 'healthy' })))
  }
  if (flag(cli, 'json')) process.stdout.write(JSON.stringify(report, jsonFields, 2) + '\n')
  concludeFrom(report, waitedOut ? waitSeconds : null)
}

/** With point-in-time recovery on, postgres is degraded while WAL archiving fails or lags (told once). */
async function addArchiving(ctx: Context, report: HealthReport): Promise<void> {
  const postgres = report.services.postgres
  if (!postgres) return
  report.services.postgres = await withArchiving(ctx, postgres)
  report.overall_status = overall(report.services)
}

/**
 * Webhook mode: what getWebhookInfo says (pending updates, the last delivery error) goes with the
 * bot; a delivery error in the last 5 minutes makes it degraded. Telegram not answering is noted,
 * not judged: it says nothing about the bot.
 */
async function addWebhookDelivery(ctx: Context, report: HealthReport): Promise<void> {
  const bot = report.services.bot
  const url = ctx.cfg.webhookUrl
  const token = ctx.cfg.TELEGRAM_BOT_TOKEN
  if (!bot || bot.status === 'unhealthy' || !url || !token) return
  let delivery: WebhookDelivery
  try {
    delivery = await webhookDelivery({ apiBase: ctx.cfg.TELEGRAM_API_BASE, token })
  } catch (error) {
    report.services.bot = { ...bot, webhook: { error: `getWebhookInfo failed: ${messageOf(error)}` } }
    return
  }
  const problem = deliveryProblem(delivery, url, new Date())
  const webhook = { pending_update_count: delivery.pendingUpdates, last_error_date: delivery.lastErrorAt ? isoSeconds(delivery.lastErrorAt) : null, last_error_message: delivery.lastErrorMessage }
  report.services.bot = problem ? { ...bot, status: 'degraded', detail: `${bot.detail}; ${problem}`, webhook } : { ...bot, webhook }
  report.overall_status = overall(report.services)
}

/** On a Swarm manager, its nodes: one down or unreachable makes the report degraded, naming it. */
async function addSwarmNodes(report: HealthReport): Promise<void> {
  const swarm = await swarmHealth()
  if (!swarm) return
  report.swarm = swarm
  if (swarm.status === 'unhealthy') report.overall_status = 'unhealthy'
  else if (swarm.status === 'degraded' && report.overall_status === 'healthy') report.overall_status = 'degraded'
}

/** Each service's line, then the Swarm's on a manager. */
function everyCheck(report: HealthReport): [string, ServiceHealth][] {
  return [...checked(report.services), ...(report.swarm ? [['swarm', report.swarm] as [string, ServiceHealth]] : [])]
}

function servicesToCheck(cli: ParsedCli): readonly Service[] {
  const wanted = cli.positionals[0]
  if (!wanted) return SERVICES
  if (!(SERVICES as readonly string[]).includes(wanted)) throw new OpsError('usage', `Unknown service "${wanted}" (expected ${SERVICES.join(', ')})`)
  return [wanted as Service]
}

function waitOption(cli: ParsedCli, fallback: number): number | null {
  const value = stringOption(cli, 'wait')
  if (value === undefined) return null
  return value === '' ? fallback : Number(value)
}

function printReport(report: HealthReport): void {
  for (const [name, health] of everyCheck(report)) {
    const line = `${name}: ${health.status === 'not_deployed' ? 'not deployed' : health.status} (${health.detail})`
    if (health.status === 'unhealthy') log.error(line)
    else log.info(line)
  }
}

/** `detail` and `timed_out` are for the log lines; the JSON keeps the contract's shape plus details. */
function jsonFields(key: string, value: unknown): unknown {
  return key === 'timed_out' ? undefined : value
}

function concludeFrom(report: HealthReport, waitedOutAfter: number | null): void {
  const all = everyCheck(report).map(([, health]) => health)
  const unhealthy = all.filter((s) => s.status === 'unhealthy').length
  const degraded = all.filter((s) => s.status === 'degraded').length
  if (unhealthy === 0 && degraded === 0) {
    log.info('All services healthy')
    return
  }
  const summary = `Health check failed: ${unhealthy} unhealthy, ${degraded} degraded`
  if (waitedOutAfter !== null) throw new OpsError('timeout', `${summary}; still not healthy after ${waitedOutAfter}s`)
  if (all.some((s) => s.timed_out)) throw new OpsError('timeout', `${summary} (timeout)`)
  throw new OpsError('command_failed', summary)
}
