// deploy <git-tag>: pre-deployment backup, checkout, pull, migrations, switch, health gate, and an
// automatic rollback (database included when a migration failed) (contract: deploy.sh).
import fs from 'node:fs'
import path from 'node:path'
import { createBackup } from '../lib/db/backup.ts'
import { findBackup, readIndex, type BackupRecord } from '../lib/db/backup-index.ts'
import { flag, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { composeConfigCheck } from '../lib/commands/compose.ts'
import { confirmDestructive } from '../lib/core/prompt.ts'
import { containerImage, dockerInfo, findContainer, manifestInspect } from '../lib/commands/docker.ts'
import { openContext, requireCompose, type Context } from '../lib/core/config.ts'
import { takeDeployLock } from '../lib/core/lock.ts'
import { completeEvent, newEvent, readEvents, readState, TAG, type DeployEvent, type DeployState } from '../lib/release/deploy-state.ts'
import { freeMb } from '../lib/core/disk.ts'
import { assertValid } from '../lib/core/deployment-config.ts'
import { prepareAppRole } from '../lib/db/app-role.ts'
import { readEnvFile } from '../lib/core/env-file.ts'
import { OpsError, messageOf, type ErrorKind } from '../lib/core/errors.ts'
import { formatMb } from '../lib/core/format.ts'
import { waitUntilHealthy } from '../lib/release/health.ts'
import { OldVersionServing } from '../lib/release/bluegreen.ts'
import { modeChecks, pendingModeSwitch, registerWebhook, webhookProfileProblem, type ModeSwitch } from '../lib/release/mode.ts'
import { ensurePostgresImage } from '../lib/db/pitr-image.ts'
import { armArchiveTimeout, ensurePitrRepo, ensureStanza } from '../lib/db/pitr.ts'
import { endWatch, startWatch } from '../lib/release/watch.ts'
import { pruneOldReleases } from '../lib/release/prune.ts'
import { deployOnSwarm } from '../lib/swarm/deploy.ts'
import { usesSwarm } from '../lib/swarm/stack.ts'
import { log } from '../lib/core/log.ts'
import { isEntryPoint, runMain } from '../lib/core/main.ts'
import { notify } from '../lib/core/notify.ts'
import { gitFetch, gitResolve } from '../lib/commands/git.ts'
import { checkout, dataServicesUpCommand, healthGate, isHealthyNow, migrateCommand, pullImage, record, recordDeployed, requireImage, schemaRevision, switchVersion } from '../lib/release/release.ts'
import { rollBack as rollBackTo, RollbackFailed } from '../lib/release/rollback.ts'
import { retry, looksTransient } from '../lib/core/retry.ts'
import { capture, isDryRun, run, tryRun } from '../lib/core/runner.ts'

const spec = {
  name: 'deploy',
  summary: 'Deploy a tagged release: backup, checkout, pull, migrate, switch, health gate, automatic rollback',
  usage: 'deploy <git-tag> [--yes] [--dry-run] [--force] [--skip-checks] [--build] [--stop-first]',
  positionals: [{ name: 'git-tag', description: 'a release tag such as v1.2.0, or a 40-hex commit SHA' }],
  maxPositionals: 1,
  options: {
    yes: { type: 'boolean', short: 'y', description: 'Do not ask for confirmation (required when there is no terminal)' },
    'dry-run': { type: 'boolean', short: 'n', description: 'Print the full plan of commands; change nothing' },
    force: { type: 'boolean', description: 'Redeploy even when this version is already running and healthy' },
    'skip-checks': { type: 'boolean', description: 'Skip the pre-flight go/no-go checks (not recommended)' },
    build: { type: 'boolean', description: 'Build the image from the checkout instead of pulling it from the registry' },
    'stop-first': { type: 'boolean', description: 'Webhook mode: stop the old version before starting the new one (a migration the old version cannot run with)' },
  },
  exitCodes: [
    [0, 'Deployment successful (or the version was already running and healthy)'],
    [1, 'Deployment failed (validation, pre-flight, pull, health check); rolled back where anything had changed'],
    [2, 'Backup failed; deployment aborted before anything changed'],
    [3, 'Migration failed; database restored from the pre-deployment backup, previous version running'],
  ],
  env: [
    ['DEPLOY_DIR, APP_DIR', 'toolkit and state (/opt/toogoodtogo), application checkout ($DEPLOY_DIR/app)'],
    ['BOT_IMAGE', 'image repository; the bot runs as $BOT_IMAGE:<git-tag>'],
    ['HEALTH_CHECK_TIMEOUT', 'seconds the new version has to become healthy (120)'],
    ['NOTIFY_WEBHOOK_URL', 'Slack-compatible webhook for success, failure and rollback'],
    ['TELEGRAM_NOTIFY_CHAT_ID', 'Telegram chat notified through the bot token (TELEGRAM_API_BASE)'],
    ['TELEGRAM_WEBHOOK_URL', 'webhook mode: blue-green switch; after the gate the webhook is set to it (with TELEGRAM_WEBHOOK_SECRET) when it differs'],
    ['WATCH_SECONDS', 'the watch window after the switch (300; 0: none)'],
  ],
  notes: [
    'State: artifacts.json (current and previous artifact) and one JSON line per event in the audit log',
    '(deployments.log beside LOG_FILE). A run killed mid-deploy is detected and settled by the next one.',
    'Webhook mode (TELEGRAM_WEBHOOK_URL set): blue-green, the new version starts beside the old one and',
    'nginx moves to it once it is healthy; polling mode stops the old one first.',
    'To switch modes, edit TELEGRAM_WEBHOOK_URL (with TELEGRAM_WEBHOOK_SECRET and DOMAIN) in .env.production',
    'and deploy the running tag: the old bot stops first, nginx starts or is removed, and Telegram\'s',
    'webhook is set or deleted.',
    'The command returns after the health gate; a watcher (scripts/watch.ts, detached, DEPLOY_DIR/watch.json)',
    'then checks the bot every 5 s for WATCH_SECONDS and rolls the release back by the same rules if it',
    'turns unhealthy (three checks in a row): recorded as rolled_back with the reason, and notified. A new',
    'deploy or rollback ends the watch first.',
  ],
  examples: ['deploy v1.2.0', 'deploy v1.2.0 --yes', 'deploy v1.2.0 --dry-run', 'deploy v1.2.0 --build --yes', 'deploy v1.2.0 --yes   # after editing TELEGRAM_WEBHOOK_URL: switches modes'],
} satisfies CliSpec

export interface DeployOptions {
  tag: string
  yes: boolean
  force: boolean
  skipChecks: boolean
  build: boolean
  stopFirst: boolean
}

// The CLI, when this file is the one node started; a test imports the command without running it.
if (isEntryPoint(import.meta.url)) {
  await runMain(spec, {
    exitCodes: { backup_failed: 2, migration_failed: 3 },
    failureLine: (error, cli) => (error instanceof OpsError && error.kind === 'usage' ? null : `Deployment failed: ${cli.positionals[0] ?? ''}`),
    asDeployUser: true,
  }, async (cli) => {
    const opts = deployOptions(cli)
    const ctx = await openContext()
    log.info(`Starting deployment of ${opts.tag}`)
    const lock = await takeDeployLock(ctx.cfg, `deploy ${opts.tag}`)
    try {
      await deploy(ctx, opts)
    } finally {
      lock.release()
    }
  })
}

/** The steps of a deploy, in order; every way one can end is in `abort`, below, or `settleEvent`. */
export async function deploy(ctx: Context, opts: DeployOptions): Promise<void> {
  await endWatch(ctx.cfg, `a new deploy of ${opts.tag}`)
  if (await usesSwarm(ctx.cfg)) return deployOnSwarm(ctx, opts)
  settleInterruptedRuns(ctx)
  const state = readState(ctx.cfg.ARTIFACTS_FILE, ctx.cfg.legacyArtifactsFile)
  const attempt = begin(ctx, state, opts)
  try {
    validateEnvironment(ctx)
    const sha = await resolveTag(ctx, opts.tag)
    const modeSwitch = await modeSwitchAhead(ctx)
    if (!opts.force && !modeSwitch && (await alreadyRunning(ctx, state, opts.tag))) return settleEvent(attempt, 'success', null)
    await preflight(ctx, opts, modeSwitch)
    await confirmDestructive(`Deploy ${opts.tag} (${sha.slice(0, 12)}) replacing ${state.current?.artifact_id ?? 'nothing'}.`, opts.yes)
    await ensurePitrRepo(ctx.cfg)
    await ensureDataServices(ctx, opts.tag)
    await prepareAppRole(ctx)
    await preDeploymentBackup(attempt)
    await checkoutRelease(attempt)
    await pullImages(attempt, opts.build)
    await runMigrations(attempt)
    await switchToRelease(attempt)
    await runHealthChecks(attempt)
    await registerWebhook(ctx.cfg)
    await recordSuccess(attempt)
  } catch (error) {
    // Refused before anything changed (pre-flight, confirmation, validation) or a step with no
    // rollback of its own: the event the run opened says so, never `in_progress`.
    settleEvent(attempt, error instanceof OpsError && error.kind === 'refused' ? 'cancelled' : 'failed', messageOf(error))
    throw error
  }
  watchRelease(attempt)
  await pruneOldReleases(ctx)
  log.info(isDryRun() ? 'Dry run complete: nothing was changed' : `Deployment successful: ${opts.tag}`)
}

function deployOptions(cli: ParsedCli): DeployOptions {
  const tag = cli.positionals[0]
  if (!tag) throw new OpsError('usage', 'Missing the git tag to deploy (e.g. v1.2.0)')
  if (!TAG.test(tag)) throw new OpsError('usage', `Invalid tag "${tag}": expected a release tag like v1.2.3 or a 40-hex commit SHA`)
  return { tag, yes: flag(cli, 'yes'), force: flag(cli, 'force'), skipChecks: flag(cli, 'skip-checks'), build: flag(cli, 'build'), stopFirst: flag(cli, 'stop-first') }
}

/** What one deploy knows as it goes: the version it replaces, its backup, its audit event. */
interface Attempt {
  ctx: Context
  tag: string
  stopFirst: boolean
  state: DeployState
  previous: string | null
  backup: BackupRecord | null
  event: DeployEvent
}

function begin(ctx: Context, state: DeployState, opts: DeployOptions): Attempt {
  const previous = state.current?.artifact_id ?? null
  return { ctx, tag: opts.tag, stopFirst: opts.stopFirst, state, previous, backup: null, event: record(ctx, newEvent('deploy', opts.tag, previous, ctx.cfg.TRIGGERED_BY)) }
}

function update(a: Attempt, changes: Partial<DeployEvent>): void {
  a.event = record(a.ctx, { ...a.event, ...changes })
}

/** Closes the run's event unless a step already did (abort, the backup, the success). */
function settleEvent(a: Attempt, status: DeployEvent['status'], reason: string | null): void {
  if (a.event.status !== 'in_progress') return
  a.event = record(a.ctx, completeEvent(status === 'success' ? { ...a.event, health_check_passed: true } : a.event, status, reason))
}

// ---- the one failure path ------------------------------------------------------------------------

type Stage = 'checkout' | 'pull' | 'migration' | 'switch' | 'health'

interface Failure {
  stage: Stage
  reason: string
  /** blue-green: the new version never took over, the previous one still runs and serves */
  previousServing?: boolean
}

/** The contract's error line for a stage, and the kind that picks the exit code. */
function describeStage(stage: Stage): { headline: string; kind: ErrorKind } {
  switch (stage) {
    case 'checkout': return { headline: 'Checkout failed, the running version is untouched', kind: 'command_failed' }
    case 'pull': return { headline: 'Pull failed, the running version is untouched', kind: 'command_failed' }
    case 'migration': return { headline: 'Migration failed', kind: 'migration_failed' }
    case 'switch': return { headline: 'Starting the new version failed', kind: 'command_failed' }
    case 'health': return { headline: 'Health checks failed', kind: 'health_failed' }
  }
}

/**
 * Every failed deploy ends here. Before the migrations nothing the bot uses has changed: the
 * checkout is put back. From the migrations on, the previous version is brought back, with the
 * database restored when the migrations changed it. Then the event, the notification, the exit.
 */
async function abort(a: Attempt, f: Failure): Promise<never> {
  const { headline, kind } = describeStage(f.stage)
  log.error(`${headline}: ${f.reason}`)
  let status: DeployEvent['status'] = 'failed'
  let outcome = `${a.previous ?? 'Nothing'} is still running.`
  let told = false
  if (f.stage === 'checkout' || f.stage === 'pull') {
    if (a.previous) await checkout(a.ctx, a.previous).catch((e) => log.warn(`Could not check out ${a.previous} again: ${messageOf(e)}`))
  } else {
    log.error('Deployment failed - initiating rollback')
    try {
      const rolledBack = await rollBack(a, f)
      status = 'rolled_back'
      outcome = `Rolled back to ${a.previous ?? 'nothing'}${rolledBack?.migration_applied ? ', database restored' : ''}.`
    } catch (error) {
      // the rollback's own failure path has logged, recorded and told what runs now
      if (!(error instanceof RollbackFailed)) throw error
      outcome = `ROLLBACK FAILED: ${error.message}`
      told = true
    }
  }
  a.event = record(a.ctx, completeEvent(a.event, status, `${f.stage} failed: ${f.reason}${told ? `; ${outcome}` : ''}`))
  if (!told) await notify(a.ctx.cfg, `Deployment of ${a.tag} failed at the ${f.stage} step: ${f.reason}. ${outcome}`)
  throw new OpsError(kind, `${headline}: ${f.reason}`, { alreadyLogged: true, alreadyNotified: true })
}

/**
 * Back to the previous version, by the one rollback (lib/release/rollback.ts), as an automated
 * rollback event of its own linked to this deploy. The database goes back to the pre-deployment
 * backup when the migrations changed it (or failed halfway): restored beside the live one while
 * the bot still runs, swapped in once it is stopped, and only then is every row the backup lacks
 * exported from the replaced database before it is dumped as a safety backup and dropped.
 */
async function rollBack(a: Attempt, f: Failure): Promise<DeployEvent | null> {
  const { ctx, previous } = a
  log.info(previous ? `Rolling back to ${previous}` : 'Rolling back (no previous version: the bot stays stopped)')
  const previousServing = f.previousServing ?? false
  return rollBackTo(ctx, {
    target: previous,
    from: a.tag,
    triggeredBy: 'automated',
    rollbackOf: a.event.event_id,
    undoing: `the failed deploy of ${a.tag}`,
    context: `Deployment of ${a.tag} failed at the ${f.stage} step: ${f.reason}.`,
    // A failed migration may have changed data without moving the revision (one transaction per migration).
    db: { touched: f.stage === 'migration', keepData: false, expects: a.event.schema_revision_before, backup: a.backup ? fresh(ctx, a.backup) : null },
    pull: false,
    safetyBackup: false,
    confirm: null,
    stopFirst: a.stopFirst,
    targetServing: previousServing,
    swapStops: previousServing ? [] : ['bot'],
    recordAs: null,
    exportRoot: path.join(ctx.cfg.BACKUP_DIR, 'exports'),
  })
}

function fresh(ctx: Context, backup: BackupRecord): BackupRecord {
  return findBackup(readIndex(ctx.cfg.BACKUP_DIR), backup.backup_id) ?? backup
}

// ---- the steps -----------------------------------------------------------------------------------

/**
 * We hold the deploy lock, so an in_progress event is one nobody runs any more (kill -9, power
 * loss): report it and close it before going on.
 */
function settleInterruptedRuns(ctx: Context): void {
  for (const event of readEvents(ctx.cfg.AUDIT_LOG).filter((e) => e.status === 'in_progress')) {
    log.warn(`An earlier ${event.event_type} of ${event.artifact_id} (started ${event.started_at} by ${event.operator}, pid ${event.pid}) was interrupted; marking it failed.${event.backup_id ? ` Its pre-deployment backup is ${event.backup_id}.` : ''} This run redoes every step.`)
    record(ctx, completeEvent(event, 'failed', 'interrupted: the process running it is gone'))
  }
}

/** The data model's rules (shared with setup-droplet), and a file only its owner can read. */
function validateEnvironment(ctx: Context): void {
  const file = ctx.cfg.envFile
  const vars = readEnvFile(file)
  if (!vars) throw new OpsError('config', `${file} does not exist (setup-droplet creates it from deployment/.env.production.template)`)
  const mode = fs.statSync(file).mode & 0o777
  if (mode & 0o077) throw new OpsError('config', `${file} is mode ${mode.toString(8)}; it holds secrets and must be 600 (chmod 600 ${file})`)
  assertValid(file, vars, vars.TELEGRAM_WEBHOOK_URL ? 'webhook' : 'polling')
  const contradiction = webhookProfileProblem(ctx.cfg.COMPOSE_PROFILES, ctx.cfg.webhookUrl !== '', file)
  if (contradiction) throw new OpsError('config', contradiction)
  requireImage(ctx.cfg)
}

async function resolveTag(ctx: Context, tag: string): Promise<string> {
  await retry(() => run(gitFetch(ctx.cfg.APP_DIR)), { what: 'git fetch', isTransient: looksTransient })
  const sha = await tryRun(gitResolve(ctx.cfg.APP_DIR, tag))
  if (sha.exitCode !== 0 || !sha.stdout.trim()) throw new OpsError('usage', `Tag ${tag} does not exist in ${ctx.cfg.APP_DIR} (after git fetch)`)
  return sha.stdout.trim()
}

/**
 * .env.production edited to the other mode since the running bot started (its own
 * TELEGRAM_WEBHOOK_URL says which it runs in): this deploy moves the stack, even of the same tag.
 */
async function modeSwitchAhead(ctx: Context): Promise<ModeSwitch | null> {
  const modeSwitch = await pendingModeSwitch(ctx.cfg, requireCompose(ctx))
  if (modeSwitch) log.info(`The running bot is in ${modeSwitch.from} mode and ${ctx.cfg.envFile} says ${modeSwitch.to} mode: this deploy switches modes`)
  return modeSwitch
}

/** Deploying what already runs, healthy, is a no-op: no backup, no restart. */
async function alreadyRunning(ctx: Context, state: DeployState, tag: string): Promise<boolean> {
  if (state.current?.artifact_id !== tag) return false
  const bot = await findContainer(requireCompose(ctx), 'bot')
  const image = bot ? await capture(containerImage(bot.id)) : ''
  if (image !== `${requireImage(ctx.cfg)}:${tag}` || !(await isHealthyNow(ctx))) return false
  log.info(`${tag} is already deployed and healthy; nothing to do (use --force to redeploy)`)
  return true
}

/**
 * Go/no-go before anything changes: disk, Docker, compose file, image in the registry; what the
 * mode needs (nginx able to start, its certificate; Telegram answering, to delete the webhook).
 */
async function preflight(ctx: Context, opts: DeployOptions, modeSwitch: ModeSwitch | null): Promise<void> {
  if (opts.skipChecks) {
    log.warn('Pre-flight checks skipped (--skip-checks)')
    return
  }
  const project = requireCompose(ctx)
  const image = `${requireImage(ctx.cfg)}:${opts.tag}`
  const checks: [string, () => Promise<string | null>][] = [
    ['disk', async () => (freeMb(ctx.cfg.DEPLOY_DIR) < ctx.cfg.MIN_FREE_DISK_MB ? `${formatMb(freeMb(ctx.cfg.DEPLOY_DIR))} free, ${formatMb(ctx.cfg.MIN_FREE_DISK_MB)} required` : null)],
    ['docker', async () => failure(await tryRun(dockerInfo()))],
    ['compose file', async () => failure(await tryRun(composeConfigCheck(project, opts.tag)))],
    ['image', async () => (opts.build ? null : failure(await tryRun(manifestInspect(image)), `${image} is not in the registry`))],
    ...modeChecks(ctx.cfg, project, modeSwitch, opts.tag),
  ]
  const failed: string[] = []
  for (const [name, check] of checks) {
    const problem = await check().catch((e: unknown) => messageOf(e))
    if (problem) failed.push(`${name}: ${problem}`)
    log.debug(`Pre-flight ${name}: ${problem ?? 'ok'}`)
  }
  if (failed.length) throw new OpsError('command_failed', `Pre-flight checks failed (nothing changed): ${failed.join('; ')}`)
  log.info('Pre-flight checks passed')
}

function failure(result: { exitCode: number; stderr: string }, message?: string): string | null {
  return result.exitCode === 0 ? null : (message ?? (result.stderr.trim().split('\n').pop() || `exit ${result.exitCode}`))
}

/** On a fresh host (or after a reboot) PostgreSQL and Redis must run before there is anything to back up. */
async function ensureDataServices(ctx: Context, tag: string): Promise<void> {
  await run(dataServicesUpCommand(requireCompose(ctx), tag))
  if (isDryRun()) return
  const { waitedOut, report } = await waitUntilHealthy(ctx, ['postgres', 'redis'], ctx.cfg.HEALTH_CHECK_TIMEOUT * 1000)
  if (waitedOut) throw new OpsError('backup_failed', `PostgreSQL or Redis is not healthy, nothing was changed: ${JSON.stringify(report.services)}`)
  // a postgres (re)started just now (a rebuilt image, a reboot) archives on archive_timeout only after a checkpoint
  await armArchiveTimeout(ctx)
  // PITR just turned on in .env.production: nothing is archived until the stanza exists
  await ensureStanza(ctx)
}

async function preDeploymentBackup(a: Attempt): Promise<void> {
  log.info('Creating pre-deployment backup')
  try {
    const backup = await createBackup(a.ctx.cfg, a.ctx.db, { type: 'pre_deployment', artifactId: a.previous, reason: `before deploying ${a.tag}`, announce: 'path' })
    a.backup = isDryRun() ? null : backup
  } catch (error) {
    a.event = record(a.ctx, completeEvent(a.event, 'failed', `backup failed: ${messageOf(error)}`))
    throw new OpsError('backup_failed', `Pre-deployment backup failed, nothing was changed: ${messageOf(error)}`, { cause: error })
  }
  update(a, { backup_created: !isDryRun(), backup_id: a.backup?.backup_id ?? null })
}

async function checkoutRelease(a: Attempt): Promise<void> {
  log.info(`Checking out tag ${a.tag}`)
  await checkout(a.ctx, a.tag).catch((error: unknown) => abort(a, { stage: 'checkout', reason: messageOf(error) }))
}

/** A registry that stays down after the retries: nothing has changed yet but the checkout. */
async function pullImages(a: Attempt, build: boolean): Promise<void> {
  log.info(build ? 'Building Docker images' : 'Pulling Docker images')
  await pullImage(requireCompose(a.ctx), a.tag, build ? { appDir: a.ctx.cfg.APP_DIR } : null).catch((error: unknown) => abort(a, { stage: 'pull', reason: messageOf(error) }))
  // postgres runs POSTGRES_IMAGE with pgBackRest, built on this host: rebuilt only when missing or changed.
  if (a.ctx.cfg.DB_MODE === 'compose') await ensurePostgresImage(a.ctx.cfg.POSTGRES_IMAGE).catch((error: unknown) => abort(a, { stage: 'pull', reason: messageOf(error) }))
}

/** Migrations run with the new image while the old version still serves. */
async function runMigrations(a: Attempt): Promise<void> {
  log.info('Running database migrations')
  const before = isDryRun() ? null : await schemaRevision(a.ctx.db)
  const result = await tryRun(migrateCommand(requireCompose(a.ctx), a.tag, a.ctx.cfg.MIGRATE_COMMAND))
  const after = isDryRun() ? null : await schemaRevision(a.ctx.db)
  update(a, { schema_revision_before: before, schema_revision_after: after, migration_applied: before !== after })
  if (result.exitCode !== 0) await abort(a, { stage: 'migration', reason: failureReason(result.stderr + '\n' + result.stdout) ?? `exit ${result.exitCode}` })
  if (!isDryRun()) log.info('Migrations applied successfully')
}

/** The line of a migration tool's output that says what broke, not the trailing links and notes. */
function failureReason(output: string): string | null {
  const lines = output.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('(Background on this error'))
  return [...lines].reverse().find((l) => /\b\w*(Error|Exception)\b|ERROR:|error:/.test(l)) ?? lines.at(-1) ?? null
}

/**
 * From here on any failure ends in the rollback. Polling mode (or --stop-first) stops the old
 * version first; webhook mode starts the new one beside it and, should it fail its gate, the old
 * one has served throughout.
 */
async function switchToRelease(a: Attempt): Promise<void> {
  log.info('Restarting services')
  try {
    const downtime = await switchVersion(a.ctx, a.tag, { stopFirst: a.stopFirst })
    update(a, { downtime_seconds: downtime })
    log.info(`Services started${downtime === null ? '' : ` (downtime ${downtime.toFixed(1)}s)`}`)
  } catch (error) {
    if (error instanceof OldVersionServing) await abort(a, { stage: error.stage, reason: error.message, previousServing: true })
    await abort(a, { stage: 'switch', reason: messageOf(error) })
  }
}

async function runHealthChecks(a: Attempt): Promise<void> {
  log.info('Running health checks')
  const gate = await healthGate(a.ctx)
  if (!gate.passed) await abort(a, { stage: 'health', reason: gate.reason })
  log.info('All services healthy')
}

/** The watch window (WATCH_SECONDS): the release is rolled back by itself if it falls over soon after. */
function watchRelease(a: Attempt): void {
  if (!a.previous || isDryRun()) return
  startWatch(a.ctx.cfg, { tag: a.tag, previous: a.previous, event_id: a.event.event_id })
}

/**
 * The new version runs and is healthy. Should recording it fail (a full disk, a file someone made
 * unwritable), say exactly that: it is not a failed deploy, and nothing is rolled back.
 */
async function recordSuccess(a: Attempt): Promise<void> {
  const downtime = a.event.downtime_seconds
  try {
    await recordDeployed(a.ctx, { state: a.state, tag: a.tag, event: a.event, rollbackFrom: null, message: `Deployed ${a.tag}${downtime === null ? '' : ` (downtime ${downtime.toFixed(1)}s)`}` })
  } catch (error) {
    throw new OpsError('corrupt_state', `${a.tag} is running and healthy, but recording it failed: ${messageOf(error)}. ${a.ctx.cfg.ARTIFACTS_FILE} and APP_VERSION in ${a.ctx.cfg.envFile} may still name ${a.previous ?? 'nothing'}; fix the cause and run deploy ${a.tag} --force`, { cause: error })
  }
}
