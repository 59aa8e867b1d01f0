// health-check [service] [--json] [--wait [seconds]]: the health of the stack (contract:
// health-check.sh). The same code is deploy's health gate and the post-boot check.
import { flag, stringOption, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { openContext } from '../lib/core/config.ts'
import { OpsError } from '../lib/core/errors.ts'
import { checked, checkHealth, SERVICES, waitUntilHealthy, type HealthReport, type Service } from '../lib/release/health.ts'
import { log } from '../lib/core/log.ts'
import { runMain } from '../lib/core/main.ts'
import { recordHealth } from '../lib/core/metrics.ts'

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
    'and is reported as not deployed, not as a failure, otherwise.',
  ],
  examples: ['health-check', 'health-check redis', 'health-check --json', 'health-check --wait 300'],
} satisfies CliSpec

await runMain(spec, { exitCodes: { timeout: 2 }, jsonFlag: 'json', asDeployUser: true }, async (cli) => {
  const ctx = await openContext()
  const services = servicesToCheck(cli)
  log.info('Checking service health')
  const waitSeconds = waitOption(cli, ctx.cfg.HEALTH_CHECK_TIMEOUT)
  const { report, waitedOut } = waitSeconds === null
    ? { report: await checkHealth(ctx, services), waitedOut: false }
    : await waitUntilHealthy(ctx, services, waitSeconds * 1000)
  printReport(report)
  // Only a check of every service is published: `health-check redis` must not make the others'
  // gauges vanish. The BotUnhealthy alert reads it (deployment/monitoring/rules).
  if (services === SERVICES) {
    recordHealth(ctx.cfg, new Date(), checked(report.services).filter(([, h]) => h.status !== 'not_deployed').map(([service, h]) => ({ service, healthy: h.status === 'healthy' })))
  }
  if (flag(cli, 'json')) process.stdout.write(JSON.stringify(report, jsonFields, 2) + '\n')
  concludeFrom(report, waitedOut ? waitSeconds : null)
})

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
  for (const [name, health] of checked(report.services)) {
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
  const all = checked(report.services).map(([, health]) => health)
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
