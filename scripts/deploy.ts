// deploy <git-tag>: pre-deployment backup, checkout, pull, migrations, switch, health gate, and an
// automatic rollback (database included when a migration failed) (contract: deploy.sh).
import fs from 'node:fs'
import os from 'node:os'
import { createBackup } from '../lib/backup.ts'
import { findBackup, readIndex, type BackupRecord } from '../lib/backup-index.ts'
import { flag, type CliSpec } from '../lib/cli.ts'
import { compose } from '../lib/compose.ts'
import { confirmDestructive } from '../lib/confirm.ts'
import { findContainer } from '../lib/containers.ts'
import { openContext, type Context } from '../lib/context.ts'
import { takeDeployLock } from '../lib/deploy-lock.ts'
import { completeEvent, newEvent, readEvents, readState, TAG, writeState, type Artifact, type DeployEvent, type DeployState } from '../lib/deploy-state.ts'
import { freeMb } from '../lib/disk.ts'
import { assertValid } from '../lib/deployment-config.ts'
import { readEnvFile, setEnvValue } from '../lib/env-file.ts'
import { OpsError, messageOf } from '../lib/errors.ts'
import { formatMb, isoSeconds } from '../lib/format.ts'
import { waitUntilHealthy } from '../lib/health.ts'
import { log } from '../lib/log.ts'
import { runMain } from '../lib/main.ts'
import { notify } from '../lib/notify.ts'
import { gitFetch, gitResolve, imageDigest, migrateCommand, pullImage, requireImage, schemaRevision } from '../lib/release.ts'
import { checkout, exportWrittenSince, healthGate, isHealthyNow, record, restoreDatabaseFrom, runVersion } from '../lib/release-steps.ts'
import { retry, looksTransient } from '../lib/retry.ts'
import { capture, isDryRun, run, tryRun } from '../lib/runner.ts'

const spec: CliSpec = {
  name: 'deploy',
  summary: 'Deploy a tagged release: backup, checkout, pull, migrate, switch, health gate, automatic rollback',
  usage: 'deploy <git-tag> [--yes] [--dry-run] [--force] [--skip-checks] [--build]',
  positionals: [{ name: 'git-tag', description: 'a release tag such as v1.2.0, or a 40-hex commit SHA' }],
  maxPositionals: 1,
  options: {
    yes: { type: 'boolean', short: 'y', description: 'Do not ask for confirmation (required when there is no terminal)' },
    'dry-run': { type: 'boolean', short: 'n', description: 'Print the full plan of commands; change nothing' },
    force: { type: 'boolean', description: 'Redeploy even when this version is already running and healthy' },
    'skip-checks': { type: 'boolean', description: 'Skip the pre-flight go/no-go checks (not recommended)' },
    build: { type: 'boolean', description: 'Build the image from the checkout instead of pulling it from the registry' },
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
  ],
  notes: [
    'State: artifacts.json (current and previous artifact) and one JSON line per event in the audit log',
    '(deployments.log beside LOG_FILE). A run killed mid-deploy is detected and settled by the next one.',
  ],
  examples: ['deploy v1.2.0', 'deploy v1.2.0 --yes', 'deploy v1.2.0 --dry-run', 'deploy v1.2.0 --build --yes'],
}

let deploying = ''

await runMain(spec, {
  exitCodes: { backup_failed: 2, migration_failed: 3 },
  failureLine: () => (deploying ? `Deployment failed: ${deploying}` : null),
}, async (cli) => {
  const tag = requireTag(cli.positionals[0])
  const ctx = await openContext()
  deploying = tag
  log.info(`Starting deployment of ${tag}`)
  const lock = await takeDeployLock(ctx.cfg, `deploy ${tag}`)
  try {
    settleInterruptedRuns(ctx)
    validateEnvironment(ctx)
    const sha = await resolveTag(ctx, tag)
    const state = readState(ctx.cfg.ARTIFACTS_FILE)
    if (!flag(cli, 'force') && (await alreadyRunning(ctx, state, tag))) return
    if (flag(cli, 'skip-checks')) log.warn('Pre-flight checks skipped (--skip-checks)')
    else await preflight(ctx, tag, flag(cli, 'build'))
    await confirmDestructive(`Deploy ${tag} (${sha.slice(0, 12)}) replacing ${state.current?.artifact_id ?? 'nothing'}.`, flag(cli, 'yes'))
    let event = record(ctx, newEvent('deploy', tag, state.current?.artifact_id ?? null, ctx.cfg.TRIGGERED_BY))
    await ensureDataServices(ctx, tag)
    const backup = await preDeploymentBackup(ctx, state)
    event = record(ctx, { ...event, backup_created: true, backup_id: backup?.backup_id ?? null })
    log.info(`Checking out tag ${tag}`)
    await checkout(ctx, tag)
    await pullImages(ctx, tag, flag(cli, 'build'), event, state)
    event = await runMigrations(ctx, tag, event, state, backup)
    event = await restartServices(ctx, tag, event)
    await runHealthChecks(ctx, tag, event, state, backup)
    await recordSuccess(ctx, state, tag, sha, event)
    log.info(`Deployment successful: ${tag}`)
  } finally {
    lock.release()
  }
})

function requireTag(tag: string | undefined): string {
  if (!tag) throw new OpsError('usage', 'Missing the git tag to deploy (e.g. v1.2.0)')
  if (!TAG.test(tag)) throw new OpsError('usage', `Invalid tag "${tag}": expected a release tag like v1.2.3 or a 40-hex commit SHA`)
  return tag
}

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

/** The data model's rules (shared with setup-droplet), and a file only root can read. */
function validateEnvironment(ctx: Context): void {
  const file = ctx.cfg.envFile
  const vars = readEnvFile(file)
  if (!vars) throw new OpsError('config', `${file} does not exist (setup-droplet creates it from deployment/.env.production.template)`)
  const mode = fs.statSync(file).mode & 0o777
  if (mode & 0o077) throw new OpsError('config', `${file} is mode ${mode.toString(8)}; it holds secrets and must be 600 (chmod 600 ${file})`)
  assertValid(file, vars, vars.TELEGRAM_WEBHOOK_URL ? 'webhook' : 'polling')
  requireImage(ctx.cfg)
}

async function resolveTag(ctx: Context, tag: string): Promise<string> {
  await retry(() => run(gitFetch(ctx.cfg.APP_DIR)), { what: 'git fetch', isTransient: looksTransient })
  const sha = await tryRun(gitResolve(ctx.cfg.APP_DIR, tag))
  if (sha.exitCode !== 0 || !sha.stdout.trim()) throw new OpsError('usage', `Tag ${tag} does not exist in ${ctx.cfg.APP_DIR} (after git fetch)`)
  return sha.stdout.trim()
}

/** Deploying what already runs, healthy, is a no-op: no backup, no restart. */
async function alreadyRunning(ctx: Context, state: DeployState, tag: string): Promise<boolean> {
  if (state.current?.artifact_id !== tag) return false
  const bot = await findContainer(ctx.compose!, 'bot')
  const image = bot ? await capture({ argv: ['docker', 'inspect', '--format', '{{.Config.Image}}', bot.id], mutates: false }) : ''
  if (image !== `${requireImage(ctx.cfg)}:${tag}` || !(await isHealthyNow(ctx))) return false
  log.info(`${tag} is already deployed and healthy; nothing to do (use --force to redeploy)`)
  return true
}

/** Go/no-go before anything changes: disk, Docker, compose file, image in the registry. */
async function preflight(ctx: Context, tag: string, build: boolean): Promise<void> {
  const image = `${requireImage(ctx.cfg)}:${tag}`
  const checks: [string, () => Promise<string | null>][] = [
    ['disk', async () => (freeMb(ctx.cfg.DEPLOY_DIR) < ctx.cfg.MIN_FREE_DISK_MB ? `${formatMb(freeMb(ctx.cfg.DEPLOY_DIR))} free, ${formatMb(ctx.cfg.MIN_FREE_DISK_MB)} required` : null)],
    ['docker', async () => failure(await tryRun({ argv: ['docker', 'info', '--format', '{{.ServerVersion}}'], mutates: false, timeoutMs: 30_000 }))],
    ['compose file', async () => failure(await tryRun({ ...compose(ctx.compose!, ['config', '--quiet'], { APP_VERSION: tag }), mutates: false, timeoutMs: 60_000 }))],
    ['image', async () => (build ? null : failure(await tryRun({ argv: ['docker', 'manifest', 'inspect', '--insecure', image], mutates: false, timeoutMs: 60_000 }), `${image} is not in the registry`))],
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
  await run({ ...compose(ctx.compose!, ['up', '-d', 'postgres', 'redis'], { APP_VERSION: tag }), timeoutMs: 5 * 60_000 })
  if (isDryRun()) return
  const { waitedOut, report } = await waitUntilHealthy(ctx, ['postgres', 'redis'], ctx.cfg.HEALTH_CHECK_TIMEOUT * 1000)
  if (waitedOut) throw new OpsError('backup_failed', `PostgreSQL or Redis is not healthy, nothing was changed: ${JSON.stringify(report.services)}`)
}

async function preDeploymentBackup(ctx: Context, state: DeployState): Promise<BackupRecord | null> {
  log.info('Creating pre-deployment backup')
  try {
    const backup = await createBackup(ctx.cfg, ctx.db, { type: 'pre_deployment', artifactId: state.current?.artifact_id ?? null, reason: `before deploying ${deploying}` })
    log.info(`Backup created: ${backup.file_path}`)
    return isDryRun() ? null : backup
  } catch (error) {
    throw new OpsError('backup_failed', `Pre-deployment backup failed, nothing was changed: ${messageOf(error)}`, { cause: error })
  }
}

/** A registry that stays down after the retries: nothing has changed yet but the checkout. */
async function pullImages(ctx: Context, tag: string, build: boolean, event: DeployEvent, state: DeployState): Promise<void> {
  log.info(build ? 'Building Docker images' : 'Pulling Docker images')
  try {
    await pullImage(ctx.compose!, tag, build ? { appDir: ctx.cfg.APP_DIR } : null)
  } catch (error) {
    if (state.current) await checkout(ctx, state.current.artifact_id).catch(() => undefined)
    record(ctx, completeEvent(event, 'failed', messageOf(error)))
    await notify(ctx.cfg, `Deployment of ${tag} failed before the switch: ${messageOf(error)}. ${state.current?.artifact_id ?? 'Nothing'} is still running.`)
    throw new OpsError('command_failed', `${build ? 'Build' : 'Pull'} failed, the running version is untouched: ${messageOf(error)}`, { cause: error })
  }
}

async function runMigrations(ctx: Context, tag: string, event: DeployEvent, state: DeployState, backup: BackupRecord | null): Promise<DeployEvent> {
  log.info('Running database migrations')
  const before = isDryRun() ? null : await schemaRevision(ctx.db)
  const result = await tryRun(migrateCommand(ctx.compose!, tag, ctx.cfg.MIGRATE_COMMAND))
  const after = isDryRun() ? null : await schemaRevision(ctx.db)
  const updated = { ...event, schema_revision_before: before, schema_revision_after: after, migration_applied: before !== after }
  if (result.exitCode === 0) {
    log.info('Migrations applied successfully')
    return record(ctx, updated)
  }
  const reason = failureReason(result.stderr + '\n' + result.stdout) ?? `exit ${result.exitCode}`
  log.error(`Migration failed: ${reason}`)
  log.error('Deployment failed - initiating rollback')
  const rolledBack = await rollBackAfterFailure(ctx, state, backup, true, updated)
  record(ctx, completeEvent(updated, rolledBack ? 'rolled_back' : 'failed', `migration failed: ${reason}`))
  await notify(ctx.cfg, `Deployment of ${tag} failed: migration failed (${reason}). ${rolledBack ? `Database restored, ${state.current?.artifact_id ?? 'previous state'} running.` : 'ROLLBACK FAILED: see the log.'}`)
  throw new OpsError('migration_failed', `Migration failed: ${reason}`, { alreadyLogged: true })
}

/** The line of a migration tool's output that says what broke, not the trailing links and notes. */
function failureReason(output: string): string | null {
  const lines = output.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('(Background on this error'))
  return [...lines].reverse().find((l) => /\b\w*(Error|Exception)\b|ERROR:|error:/.test(l)) ?? lines.at(-1) ?? null
}

async function restartServices(ctx: Context, tag: string, event: DeployEvent): Promise<DeployEvent> {
  log.info('Restarting services')
  const downtime = await runVersion(ctx, tag)
  log.info(`Services started${downtime === null ? '' : ` (downtime ${downtime.toFixed(1)}s)`}`)
  return { ...event, downtime_seconds: downtime }
}

async function runHealthChecks(ctx: Context, tag: string, event: DeployEvent, state: DeployState, backup: BackupRecord | null): Promise<void> {
  log.info('Running health checks')
  const failed = await healthGate(ctx)
  if (!failed) {
    log.info('All services healthy')
    return
  }
  log.error(`Health checks failed after ${ctx.cfg.HEALTH_CHECK_TIMEOUT}s`)
  log.error('Deployment failed - initiating rollback')
  const schemaChanged = event.migration_applied
  const rolledBack = await rollBackAfterFailure(ctx, state, backup, schemaChanged, event)
  record(ctx, completeEvent(event, rolledBack ? 'rolled_back' : 'failed', 'health checks failed'))
  await notify(ctx.cfg, `Deployment of ${tag} failed its health checks. ${rolledBack ? `Rolled back to ${state.current?.artifact_id ?? 'nothing'}.` : 'ROLLBACK FAILED: see the log.'}`)
  throw new OpsError('health_failed', `Health checks failed for ${tag}`, { alreadyLogged: true })
}

/**
 * Back to the previous version: the database is restored from the pre-deployment backup only
 * when migrations changed it (after exporting the rows written since, so nothing is lost
 * silently). Returns false, loudly, when the rollback itself fails.
 */
async function rollBackAfterFailure(ctx: Context, state: DeployState, backup: BackupRecord | null, restoreDb: boolean, event: DeployEvent): Promise<boolean> {
  const previous = state.current?.artifact_id ?? null
  log.info(previous ? `Rolling back to ${previous}` : 'Rolling back (no previous version: the bot stays stopped)')
  try {
    if (restoreDb && backup) {
      await exportWrittenSince(ctx, backup, event.event_id)
      log.info('Restoring database backup')
      await restoreDatabaseFrom(ctx, fresh(ctx, backup))
    }
    if (previous) {
      await checkout(ctx, previous)
      await runVersion(ctx, previous)
      const failed = await healthGate(ctx)
      if (failed) throw new OpsError('health_failed', `${previous} is not healthy after the rollback either`)
    } else {
      await run(compose(ctx.compose!, ['stop', 'bot']))
    }
    log.info('Rollback complete')
    return true
  } catch (error) {
    log.error(`Rollback failed: ${messageOf(error)}. Inspect with health-check; the pre-deployment backup is ${backup?.backup_id ?? 'missing'}`)
    return false
  }
}

function fresh(ctx: Context, backup: BackupRecord): BackupRecord {
  return findBackup(readIndex(ctx.cfg.BACKUP_DIR), backup.backup_id) ?? backup
}

async function recordSuccess(ctx: Context, state: DeployState, tag: string, sha: string, event: DeployEvent): Promise<void> {
  if (isDryRun()) return
  const image = `${requireImage(ctx.cfg)}:${tag}`
  const artifact: Artifact = {
    artifact_id: tag,
    git_commit_sha: sha,
    git_tag: /^v\d/.test(tag) ? tag : null,
    docker_image_uri: image,
    docker_image_digest: await imageDigest(image),
    deployed: true,
    deployed_at: isoSeconds(new Date()),
    rollback_from: null,
    schema_revision: event.schema_revision_after,
  }
  writeState(ctx.cfg.ARTIFACTS_FILE, { current: artifact, previous: state.current ? { ...state.current, deployed: false } : null })
  setEnvValue(ctx.cfg.envFile, 'APP_VERSION', tag)
  record(ctx, completeEvent({ ...event, health_check_passed: true }, 'success', null))
  await notify(ctx.cfg, `Deployed ${tag} on ${os.hostname()}${event.downtime_seconds === null ? '' : ` (downtime ${event.downtime_seconds.toFixed(1)}s)`}.`)
}
