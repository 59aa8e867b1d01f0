// deploy <git-tag>: pre-deployment backup, checkout, pull, migrations, switch, health gate, and an
// automatic rollback (database included when a migration failed) (contract: deploy.sh).
import path from 'node:path'
import { flag, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { composeBase, composeEnv } from '../lib/commands/compose.ts'
import { confirmDestructive } from '../lib/core/prompt.ts'
import { findContainer } from '../lib/commands/docker.ts'
import { openContext, requireCompose, type Context } from '../lib/stack/context.ts'
import { takeDeployLock } from '../lib/core/lock.ts'
import { readState, TAG, type DeployEvent, type DeployState } from '../lib/release/deploy-state.ts'
import { freeMb } from '../lib/core/disk.ts'
import { prepareAppRole } from '../lib/db/app-role.ts'
import { OpsError, messageOf } from '../lib/core/errors.ts'
import { abort, begin, checkFailure, checkoutRelease, goNoGo, preDeploymentBackup, recordSuccess, resolveTag, runMigrations as migrate, settleEvent, settleInterruptedRuns, update, validateEnvFile, undoRequest, type Attempt, type DeployOptions, type Failure } from '../lib/release/deploy-attempt.ts'
import { formatMb } from '../lib/core/format.ts'
import { waitUntilHealthy } from '../lib/stack/health.ts'
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
import { botRun, healthGate, isHealthyNow, pullImage, requireImage, switchVersion } from '../lib/release/release.ts'
import { rollBack as rollBackTo } from '../lib/release/rollback.ts'
import { $, $read, isDryRun } from '../lib/core/shell.ts'

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
  const attempt = begin(ctx, state, opts, rollBack)
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

// ---- the one failure path ------------------------------------------------------------------------

/** Back to the previous version by the one rollback (lib/release/rollback.ts); the image is still here. */
async function rollBack(a: Attempt, f: Failure): Promise<DeployEvent | null> {
  return rollBackTo(a.ctx, { ...undoRequest(a, f), pull: false, exportRoot: path.join(a.ctx.cfg.BACKUP_DIR, 'exports') })
}

// ---- the steps -----------------------------------------------------------------------------------

function validateEnvironment(ctx: Context): void {
  validateEnvFile(ctx)
  const contradiction = webhookProfileProblem(ctx.cfg.COMPOSE_PROFILES, ctx.cfg.webhookUrl !== '', ctx.cfg.envFile)
  if (contradiction) throw new OpsError('config', contradiction)
  requireImage(ctx.cfg)
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
  const image = bot ? (await $read({ timeoutMs: 30_000 })`docker inspect --format '{{.Config.Image}}' ${bot.id}`).stdout.trim() : ''
  if (image !== `${requireImage(ctx.cfg)}:${tag}` || !(await isHealthyNow(ctx))) return false
  log.info(`${tag} is already deployed and healthy; nothing to do (use --force to redeploy)`)
  return true
}

/**
 * Go/no-go before anything changes: disk, Docker, compose file, image in the registry; what the
 * mode needs (nginx able to start, its certificate; Telegram answering, to delete the webhook).
 */
async function preflight(ctx: Context, opts: DeployOptions, modeSwitch: ModeSwitch | null): Promise<void> {
  await goNoGo(opts.skipChecks, () => {
    const project = requireCompose(ctx)
    const image = `${requireImage(ctx.cfg)}:${opts.tag}`
    return [
    ['disk', async () => (freeMb(ctx.cfg.DEPLOY_DIR) < ctx.cfg.MIN_FREE_DISK_MB ? `${formatMb(freeMb(ctx.cfg.DEPLOY_DIR))} free, ${formatMb(ctx.cfg.MIN_FREE_DISK_MB)} required` : null)],
    ['docker', async () => checkFailure(await $read({ nothrow: true, timeoutMs: 30_000 })`docker info --format '{{.ServerVersion}}'`)],
    ['compose file', async () => checkFailure(await $read({ env: composeEnv(project, { APP_VERSION: opts.tag }), nothrow: true, timeoutMs: 60_000 })`${composeBase(project)} config --quiet`)],
    // --insecure: a plain-HTTP registry too; asks the registry without pulling
    ['image', async () => (opts.build ? null : checkFailure(await $read({ nothrow: true, timeoutMs: 60_000 })`docker manifest inspect --insecure ${image}`, `${image} is not in the registry`))],
    ...modeChecks(ctx.cfg, project, modeSwitch, opts.tag),
    ]
  })
}

/** On a fresh host (or after a reboot) PostgreSQL and Redis must run before there is anything to back up. */
async function ensureDataServices(ctx: Context, tag: string): Promise<void> {
  const p = requireCompose(ctx)
  await $({ env: composeEnv(p, { APP_VERSION: tag }), timeoutMs: 5 * 60_000 })`${composeBase(p)} up -d postgres redis`
  if (isDryRun()) return
  const { waitedOut, report } = await waitUntilHealthy(ctx, ['postgres', 'redis'], ctx.cfg.HEALTH_CHECK_TIMEOUT * 1000)
  if (waitedOut) throw new OpsError('backup_failed', `PostgreSQL or Redis is not healthy, nothing was changed: ${JSON.stringify(report.services)}`)
  // a postgres (re)started just now (a rebuilt image, a reboot) archives on archive_timeout only after a checkpoint
  await armArchiveTimeout(ctx)
  // PITR just turned on in .env.production: nothing is archived until the stanza exists
  await ensureStanza(ctx)
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
  const p = requireCompose(a.ctx)
  const command = a.ctx.cfg.MIGRATE_COMMAND.trim().split(/\s+/)
  await migrate(a, () => $({ env: composeEnv(p, { APP_VERSION: a.tag }), timeoutMs: 10 * 60_000, nothrow: true })`${botRun(p)} ${command}`)
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
