import fs from 'node:fs'
import { composeBase, composeEnv, type ComposeProject } from '../commands/compose.ts'
import { systemctl } from '../commands/systemd.ts'
import { loadConfig } from '../core/config.ts'
import { type Context, openContext } from '../stack/context.ts'
import { messageOf, OpsError } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { looksTransient, retry } from '../core/retry.ts'
import { $, isDryRun } from '../core/shell.ts'
import { prepareAppRole } from '../db/app-role.ts'
import { appendEvent, completeEvent, newEvent, readState, writeState, type DeployEvent } from '../release/deploy-state.ts'
import { SERVICES, waitUntilHealthy } from '../stack/health.ts'
import { registerWebhook } from '../release/mode.ts'
import { artifactFor, schemaRevision } from '../release/release.ts'
import { webhookStateFile } from '../release/webhook.ts'
import { handOver } from './hand-over.ts'
import type { Account } from '../commands/host.ts'
import { startHealthMetrics } from './monitoring.ts'
import { firstBaseBackup, preparePostgres } from './pitr.ts'
import { step, type Plan } from './plan.ts'
import { withoutOffsite, type SetupSettings } from './settings.ts'
import { BACKUP_TIMER, DRILL_TIMER, ENABLED_UNITS, STACK_UNIT } from './units.ts'

// setup-droplet's last steps: the release started, checked healthy, its webhook set, and recorded
// as the first deployment, as deploy would have done it.

// The contract's "Service startup wait: 5 minutes".
const STARTUP_WAIT_MS = 5 * 60_000

/** The release's images, its first migration, then the whole stack; returns the deployment opened. */
export async function startServices(s: SetupSettings, compose: ComposeProject, version: string): Promise<DeployEvent> {
  step('Starting services')
  // Opened now, appended only once the stack is healthy: a setup that stops halfway leaves no
  // in_progress event for deploy to settle, and the next run opens its own.
  const event = newEvent('deploy', version, null, 'manual')
  // The tag on the command line as deploy passes it; .env.production names the same one.
  const env = composeEnv(compose, { APP_VERSION: version })
  // Not postgres: it runs an image built here (POSTGRES_IMAGE with pgBackRest), which no registry holds.
  const pulled = ['bot', 'redis', ...(compose.profiles.includes('webhook') ? ['nginx'] : [])]
  await retry(() => $({ env, timeoutMs: 15 * 60_000 })`${composeBase(compose)} pull ${pulled}`, { isTransient: looksTransient, what: 'docker compose pull' })
  await preparePostgres(loadConfig(withoutOffsite(s.input)))
  // The database schema first, with only the services the migration needs.
  await $({ env, timeoutMs: 5 * 60_000 })`${composeBase(compose)} up --detach postgres redis`
  const data = await openContext(withoutOffsite(s.input))
  await waitForDataServices(data)
  await prepareAppRole(data)
  log.info(`Running database migrations (${s.cfg.MIGRATE_COMMAND})`)
  // As deploy runs it, but without --no-deps: on a fresh host `run` waits for the database's
  // healthcheck (depends_on) while it initialises.
  await $({ env, timeoutMs: 10 * 60_000 })`${composeBase(compose)} run --rm -T bot ${s.cfg.MIGRATE_COMMAND.trim().split(/\s+/)}`
  // Then the whole stack on this release, as deploy switches: the stack unit only ever starts
  // what exists (--no-recreate), and on a re-run it is already active (its start is a no-op), so
  // it would leave the bot of an earlier run's release in place. Containers that already run this
  // release are left as they are.
  await $({ env, timeoutMs: 5 * 60_000 })`${composeBase(compose)} up --detach --remove-orphans`
  log.info(`Enabling ${ENABLED_UNITS.join(', ')}; starting the stack unit (it brings the stack up at every boot) and the timers`)
  await systemctl('enable', ...ENABLED_UNITS)
  await systemctl('start', STACK_UNIT, BACKUP_TIMER, DRILL_TIMER)
  await startHealthMetrics(compose)
  return event
}

/** `up` returns once the containers run; the bot's role is made by a query, so the server must answer. */
async function waitForDataServices(ctx: Context): Promise<void> {
  if (isDryRun()) return
  const { waitedOut, report } = await waitUntilHealthy(ctx, ['postgres', 'redis'], STARTUP_WAIT_MS)
  if (waitedOut) throw new OpsError('health_failed', `PostgreSQL or Redis did not become healthy: ${JSON.stringify(report.services)}`)
}

/** Waits for every service, ending at once when the bot is certain never to become healthy. */
export async function runHealthChecks(plan: Plan, version: string): Promise<Context | null> {
  step('Running health checks')
  if (isDryRun()) {
    log.info(`[dry-run] would wait up to ${STARTUP_WAIT_MS / 60_000} minutes for every service to be healthy`)
    return null
  }
  const ctx = await openContext(withoutOffsite(plan.s.input))
  const started = Date.now()
  const { report, dead } = await waitUntilHealthy(ctx, SERVICES, STARTUP_WAIT_MS)
  for (const [name, health] of Object.entries(report.services)) {
    if (!health) continue
    const line = `${name}: ${health.status === 'not_deployed' ? 'not deployed' : health.status} (${health.detail})`
    if (health.status === 'healthy' || (health.status === 'not_deployed' && plan.mode === 'polling')) log.info(line)
    else log.error(line)
  }
  const waited = `${Math.round((Date.now() - started) / 1000)}s`
  const where = `see the lines above, \`systemctl status ${STACK_UNIT}\` and \`docker compose -p ${plan.s.cfg.COMPOSE_PROJECT_NAME} logs bot\``
  if (dead) {
    throw new OpsError('health_failed', `${version} will not become healthy: ${dead} (after ${waited}; waiting the full ${STARTUP_WAIT_MS / 60_000} minutes would not change it): ${where}. Fix the release or set APP_VERSION to another one, then run setup-droplet again`)
  }
  const nginxMissing = plan.mode === 'webhook' && report.services.nginx?.status !== 'healthy'
  if (report.overall_status !== 'healthy' || nginxMissing) {
    throw new OpsError('health_failed', `Services not healthy after ${waited}: ${where}`)
  }
  step('All services healthy')
  return ctx
}

/**
 * Webhook mode, once nginx and the bot serve: Telegram's webhook set to TELEGRAM_WEBHOOK_URL with
 * TELEGRAM_WEBHOOK_SECRET (only when it differs), as deploy does, through TELEGRAM_API_BASE.
 */
export async function registerTelegramWebhook(plan: Plan, ctx: Context | null, account: Account): Promise<void> {
  if (plan.mode !== 'webhook') return
  step('Registering the Telegram webhook')
  if (!ctx) {
    log.info('[dry-run] would set Telegram\'s webhook to TELEGRAM_WEBHOOK_URL if it differs')
    return
  }
  await registerWebhook(ctx.cfg)
  // What was registered (a hash) is the deploy user's from now on: deploy replaces it.
  const state = webhookStateFile(ctx.cfg.DEPLOY_DIR)
  if (fs.existsSync(state)) await handOver(account.user, state, 0o600)
}

/**
 * The release setup started is the first deployment, recorded as deploy records one: an audit
 * event and artifacts.json's current artifact. Without them the first deploy has nothing to roll
 * back to. Written as root, then handed to the deploy user, who appends and replaces them from
 * then on. A run over a host where this release is already current records nothing.
 */
export async function recordDeployment(s: SetupSettings, { account, version, event, ctx }: { account: Account; version: string; event: DeployEvent; ctx: Context | null }): Promise<void> {
  step('Recording the deployment')
  const cfg = s.cfg
  if (!ctx || isDryRun()) {
    log.info(`[dry-run] would record ${version} as deployed: an event in ${cfg.AUDIT_LOG}, the current artifact in ${cfg.ARTIFACTS_FILE}`)
    return
  }
  const state = readState(cfg.ARTIFACTS_FILE, cfg.legacyArtifactsFile)
  const revision = await schemaRevision(ctx.db).catch((error: unknown) => {
    log.warn(`Cannot read the schema revision: ${messageOf(error)}`)
    return null
  })
  const artifact = await artifactFor(ctx, version, { rollbackFrom: null, schemaRevision: revision })
  const artifactId = artifact.artifact_id
  const sha = artifact.git_commit_sha
  if (state.current?.artifact_id === artifactId) {
    log.info(`${artifactId} is already the current deployment in ${cfg.ARTIFACTS_FILE}`)
    return
  }
  const completed = completeEvent({
    ...event,
    artifact_id: artifactId,
    previous_artifact_id: state.current?.artifact_id ?? null,
    health_check_passed: true,
    migration_applied: true,
    schema_revision_after: revision,
  }, 'success', null)
  appendEvent(cfg.AUDIT_LOG, completed)
  writeState(cfg.ARTIFACTS_FILE, { current: artifact, previous: state.current ? { ...state.current, deployed: false } : null })
  await handOver(account.user, cfg.AUDIT_LOG, 0o640)
  await handOver(account.user, cfg.ARTIFACTS_FILE, 0o644)
  log.info(`Recorded ${artifactId} (${sha.slice(0, 12)}) as the current deployment: the first deploy can roll back to it`)
}

/** With point-in-time recovery on, the first full base backup: WAL is replayed onto it. */
export async function takeFirstBaseBackup(ctx: Context | null, account: Account): Promise<void> {
  if (!ctx?.cfg.PITR_ENABLED || ctx.cfg.DB_MODE !== 'compose') return
  step('Taking the first base backup')
  await firstBaseBackup(ctx, account.user)
}
