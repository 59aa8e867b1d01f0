import fs from 'node:fs'
import { createBackup } from '../db/backup.ts'
import { findBackup, readIndex, type BackupRecord } from '../db/backup-index.ts'
import type { Context } from '../core/config.ts'
import { assertValid } from '../core/deployment-config.ts'
import { freeMb } from '../core/disk.ts'
import { readEnvFile } from '../core/env-file.ts'
import { OpsError, messageOf, type ErrorKind } from '../core/errors.ts'
import { formatMb } from '../core/format.ts'
import { log } from '../core/log.ts'
import { notify } from '../core/notify.ts'
import { confirmDestructive } from '../core/prompt.ts'
import { looksTransient, retry } from '../core/retry.ts'
import { isDryRun, run, tryRun } from '../core/runner.ts'
import { dockerInfo, manifestInspect } from '../commands/docker.ts'
import { gitFetch, gitResolve } from '../commands/git.ts'
import { completeEvent, newEvent, readEvents, readState, type DeployEvent, type DeployState } from '../release/deploy-state.ts'
import { clearWebhook, registerWebhook } from '../release/mode.ts'
import { startWatch } from '../release/watch.ts'
import { checkout, record, recordDeployed, requireImage, schemaRevision } from '../release/release.ts'
import { RollbackFailed } from '../release/rollback.ts'
import { runJob } from './job.ts'
import { rollBackOnSwarm } from './rollback.ts'
import { botExists, notConverged, specTag, waitForUpdate } from './service.ts'
import { deployStack, isWebhook, stackName } from './stack.ts'

// deploy on a Swarm (ORCHESTRATOR=swarm): the steps, log lines, exit codes, audit events and
// notifications of scripts/deploy.ts; what differs is how a release runs. Nodes pull the image as
// their tasks start; migrations run as a one-off task of the new image; the switch is `docker
// stack deploy`, which Swarm rolls out one task at a time (start-first in webhook mode) and rolls
// back by itself when a new task never turns healthy; the gate is the converged tasks.

export interface SwarmDeployOptions {
  tag: string
  yes: boolean
  force: boolean
  skipChecks: boolean
  build: boolean
  stopFirst: boolean
}

interface Attempt {
  ctx: Context
  tag: string
  stopFirst: boolean
  state: DeployState
  previous: string | null
  backup: BackupRecord | null
  event: DeployEvent
}

export async function deployOnSwarm(ctx: Context, opts: SwarmDeployOptions): Promise<void> {
  if (opts.build) throw new OpsError('usage', '--build is for one host: on a Swarm every node pulls the image from the registry (push it there first)')
  settleInterruptedRuns(ctx)
  const state = readState(ctx.cfg.ARTIFACTS_FILE, ctx.cfg.legacyArtifactsFile)
  const previous = state.current?.artifact_id ?? null
  const a: Attempt = { ctx, tag: opts.tag, stopFirst: opts.stopFirst, state, previous, backup: null, event: record(ctx, newEvent('deploy', opts.tag, previous, ctx.cfg.TRIGGERED_BY)) }
  try {
    validateEnvironment(ctx)
    const sha = await resolveTag(ctx, opts.tag)
    if (!opts.force && (await alreadyRunning(ctx, state, opts.tag))) return settleEvent(a, 'success', null)
    await preflight(ctx, opts)
    await confirmDestructive(`Deploy ${opts.tag} (${sha.slice(0, 12)}) replacing ${previous ?? 'nothing'} on Swarm stack ${stackName(ctx.cfg)}.`, opts.yes)
    await preDeploymentBackup(a)
    await checkoutRelease(a)
    await runMigrations(a)
    await switchToRelease(a)
    await registerWebhook(ctx.cfg)
    await recordSuccess(a)
  } catch (error) {
    settleEvent(a, error instanceof OpsError && error.kind === 'refused' ? 'cancelled' : 'failed', messageOf(error))
    throw error
  }
  // The watch window (WATCH_SECONDS): scripts/watch.ts asks Swarm whether every replica still runs.
  if (previous && !isDryRun()) startWatch(ctx.cfg, { tag: opts.tag, previous, event_id: a.event.event_id })
  log.info(isDryRun() ? 'Dry run complete: nothing was changed' : `Deployment successful: ${opts.tag}`)
}

function update(a: Attempt, changes: Partial<DeployEvent>): void {
  a.event = record(a.ctx, { ...a.event, ...changes })
}

function settleEvent(a: Attempt, status: DeployEvent['status'], reason: string | null): void {
  if (a.event.status !== 'in_progress') return
  a.event = record(a.ctx, completeEvent(status === 'success' ? { ...a.event, health_check_passed: true } : a.event, status, reason))
}

// ---- the one failure path, as in scripts/deploy.ts -----------------------------------------------

type Stage = 'checkout' | 'migration' | 'switch' | 'health'

const HEADLINES: Record<Stage, { headline: string; kind: ErrorKind }> = {
  checkout: { headline: 'Checkout failed, the running version is untouched', kind: 'command_failed' },
  migration: { headline: 'Migration failed', kind: 'migration_failed' },
  switch: { headline: 'Starting the new version failed', kind: 'command_failed' },
  health: { headline: 'Health checks failed', kind: 'health_failed' },
}

/**
 * From the migrations on, the previous version is brought back, with the database restored when
 * the migrations changed it. `previousServing`: Swarm's own rollback already put it back.
 */
async function abort(a: Attempt, stage: Stage, reason: string, previousServing = false): Promise<never> {
  const { headline, kind } = HEADLINES[stage]
  log.error(`${headline}: ${reason}`)
  let status: DeployEvent['status'] = 'failed'
  let outcome = `${a.previous ?? 'Nothing'} is still running.`
  let told = false
  if (stage === 'checkout') {
    if (a.previous) await checkout(a.ctx, a.previous).catch((e) => log.warn(`Could not check out ${a.previous} again: ${messageOf(e)}`))
  } else {
    log.error('Deployment failed - initiating rollback')
    log.info(a.previous ? `Rolling back to ${a.previous}` : 'Rolling back (no previous version: the bot stays stopped)')
    try {
      const rolledBack = await rollBackOnSwarm(a.ctx, {
        target: a.previous,
        from: a.tag,
        triggeredBy: 'automated',
        rollbackOf: a.event.event_id,
        undoing: `the failed deploy of ${a.tag}`,
        context: `Deployment of ${a.tag} failed at the ${stage} step: ${reason}.`,
        // A failed migration may have changed data without moving the revision (one transaction per migration).
        db: { touched: stage === 'migration', keepData: false, expects: a.event.schema_revision_before, backup: a.backup ? (findBackup(readIndex(a.ctx.cfg.BACKUP_DIR), a.backup.backup_id) ?? a.backup) : null },
        safetyBackup: false,
        confirm: null,
        stopFirst: a.stopFirst,
        targetServing: previousServing,
        swapStops: previousServing ? [] : ['bot'],
        recordAs: null,
      })
      status = 'rolled_back'
      outcome = `Rolled back to ${a.previous ?? 'nothing'}${rolledBack?.migration_applied ? ', database restored' : ''}.`
    } catch (error) {
      if (!(error instanceof RollbackFailed)) throw error
      outcome = `ROLLBACK FAILED: ${error.message}`
      told = true
    }
  }
  a.event = record(a.ctx, completeEvent(a.event, status, `${stage} failed: ${reason}${told ? `; ${outcome}` : ''}`))
  if (!told) await notify(a.ctx.cfg, `Deployment of ${a.tag} failed at the ${stage} step: ${reason}. ${outcome}`)
  throw new OpsError(kind, `${headline}: ${reason}`, { alreadyLogged: true, alreadyNotified: true })
}

// ---- the steps -----------------------------------------------------------------------------------

function settleInterruptedRuns(ctx: Context): void {
  for (const event of readEvents(ctx.cfg.AUDIT_LOG).filter((e) => e.status === 'in_progress')) {
    log.warn(`An earlier ${event.event_type} of ${event.artifact_id} (started ${event.started_at} by ${event.operator}, pid ${event.pid}) was interrupted; marking it failed.${event.backup_id ? ` Its pre-deployment backup is ${event.backup_id}.` : ''} This run redoes every step.`)
    record(ctx, completeEvent(event, 'failed', 'interrupted: the process running it is gone'))
  }
}

function validateEnvironment(ctx: Context): void {
  const file = ctx.cfg.envFile
  const vars = readEnvFile(file)
  if (!vars) throw new OpsError('config', `${file} does not exist (setup-droplet creates it from deployment/.env.production.template)`)
  const mode = fs.statSync(file).mode & 0o777
  if (mode & 0o077) throw new OpsError('config', `${file} is mode ${mode.toString(8)}; it holds secrets and must be 600 (chmod 600 ${file})`)
  assertValid(file, vars, vars.TELEGRAM_WEBHOOK_URL ? 'webhook' : 'polling')
  if (ctx.cfg.DB_MODE !== 'url') throw new OpsError('config', 'ORCHESTRATOR=swarm needs DB_MODE=url (a managed database, or one outside the stack): README "More than one droplet"')
  requireImage(ctx.cfg)
}

async function resolveTag(ctx: Context, tag: string): Promise<string> {
  await retry(() => run(gitFetch(ctx.cfg.APP_DIR)), { what: 'git fetch', isTransient: looksTransient })
  const sha = await tryRun(gitResolve(ctx.cfg.APP_DIR, tag))
  if (sha.exitCode !== 0 || !sha.stdout.trim()) throw new OpsError('usage', `Tag ${tag} does not exist in ${ctx.cfg.APP_DIR} (after git fetch)`)
  return sha.stdout.trim()
}

async function alreadyRunning(ctx: Context, state: DeployState, tag: string): Promise<boolean> {
  if (state.current?.artifact_id !== tag || (await specTag(ctx.cfg)) !== tag || (await notConverged(ctx.cfg, tag)) !== null) return false
  log.info(`${tag} is already deployed and healthy; nothing to do (use --force to redeploy)`)
  return true
}

/** Go/no-go: disk, a Swarm manager, the image in the registry, the nodes the stack is pinned to. */
async function preflight(ctx: Context, opts: SwarmDeployOptions): Promise<void> {
  if (opts.skipChecks) {
    log.warn('Pre-flight checks skipped (--skip-checks)')
    return
  }
  const image = `${requireImage(ctx.cfg)}:${opts.tag}`
  const labels = isWebhook(ctx.cfg) ? ['ttg.data', 'ttg.ingress'] : ['ttg.data']
  const checks: [string, () => Promise<string | null>][] = [
    ['disk', async () => (freeMb(ctx.cfg.DEPLOY_DIR) < ctx.cfg.MIN_FREE_DISK_MB ? `${formatMb(freeMb(ctx.cfg.DEPLOY_DIR))} free, ${formatMb(ctx.cfg.MIN_FREE_DISK_MB)} required` : null)],
    ['docker', async () => failure(await tryRun(dockerInfo()))],
    ['swarm manager', async () => ((await tryRun({ argv: ['docker', 'info', '--format', '{{.Swarm.ControlAvailable}}'], mutates: false })).stdout.trim() === 'true' ? null : 'this host is not a Swarm manager (setup-droplet --swarm init)')],
    ['node labels', async () => missingLabels(labels)],
    ['image', async () => failure(await tryRun(manifestInspect(image)), `${image} is not in the registry`)],
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

async function missingLabels(labels: string[]): Promise<string | null> {
  const nodes = await tryRun({ argv: ['docker', 'node', 'ls', '--quiet'], mutates: false })
  const ids = nodes.stdout.trim().split('\n').filter(Boolean)
  const found = ids.length ? (await tryRun({ argv: ['docker', 'node', 'inspect', '--format', '{{range $k, $v := .Spec.Labels}}{{$k}}={{$v}} {{end}}', ...ids], mutates: false })).stdout : ''
  const missing = labels.filter((l) => !found.includes(`${l}=true`))
  return missing.length ? `no node is labelled ${missing.join(', ')} (docker node update --label-add ${missing[0]}=true <node>)` : null
}

function failure(result: { exitCode: number; stderr: string }, message?: string): string | null {
  return result.exitCode === 0 ? null : (message ?? (result.stderr.trim().split('\n').pop() || `exit ${result.exitCode}`))
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
  await checkout(a.ctx, a.tag).catch((error: unknown) => abort(a, 'checkout', messageOf(error)))
}

/** A one-off task of the new image on the stack's network, while the old version still serves. */
async function runMigrations(a: Attempt): Promise<void> {
  log.info('Running database migrations')
  const before = isDryRun() ? null : await schemaRevision(a.ctx.db)
  const result = await runJob(a.ctx, a.tag, 'migrate', a.ctx.cfg.MIGRATE_COMMAND)
  const after = isDryRun() ? null : await schemaRevision(a.ctx.db)
  update(a, { schema_revision_before: before, schema_revision_after: after, migration_applied: before !== after })
  if (result.exitCode !== 0) await abort(a, 'migration', failureReason(result.stderr + '\n' + result.stdout) ?? `exit ${result.exitCode}`)
  if (!isDryRun()) log.info('Migrations applied successfully')
}

function failureReason(output: string): string | null {
  const lines = output.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('(Background on this error'))
  return [...lines].reverse().find((l) => /\b\w*(Error|Exception)\b|ERROR:|error:/.test(l)) ?? lines.at(-1) ?? null
}

/**
 * The stack deploy and Swarm's rolling update: a new task must pass its health check before the
 * next old one stops (start-first in webhook mode, so the old version serves throughout); a task
 * that never does makes Swarm roll the service back by itself (update_config.failure_action).
 */
async function switchToRelease(a: Attempt): Promise<void> {
  log.info('Restarting services')
  const first = !(await botExists(a.ctx.cfg))
  const since = new Date()
  try {
    // Telegram answers a poller 409 Conflict while a webhook is set.
    if (!isWebhook(a.ctx.cfg)) await clearWebhook(a.ctx.cfg, false)
    await deployStack(a.ctx, a.tag)
  } catch (error) {
    await abort(a, 'switch', messageOf(error))
  }
  const downtime = isWebhook(a.ctx.cfg) && !a.stopFirst && !first ? 0 : null
  update(a, { downtime_seconds: downtime })
  log.info(`Services started${downtime === null ? '' : ` (downtime ${downtime.toFixed(1)}s)`}`)
  log.info('Running health checks')
  const outcome = await waitForUpdate(a.ctx, a.tag, since)
  if (outcome.state === 'rolled_back') await abort(a, 'health', `Swarm rolled the update back: ${outcome.message}`, true)
  if (outcome.state === 'failed') await abort(a, 'health', outcome.message)
  log.info('All services healthy')
}

async function recordSuccess(a: Attempt): Promise<void> {
  try {
    await recordDeployed(a.ctx, { state: a.state, tag: a.tag, event: a.event, rollbackFrom: null, message: `Deployed ${a.tag}${a.event.downtime_seconds === null ? '' : ` (downtime ${a.event.downtime_seconds.toFixed(1)}s)`}` })
  } catch (error) {
    throw new OpsError('corrupt_state', `${a.tag} is running and healthy, but recording it failed: ${messageOf(error)}. ${a.ctx.cfg.ARTIFACTS_FILE} and APP_VERSION in ${a.ctx.cfg.envFile} may still name ${a.previous ?? 'nothing'}; fix the cause and run deploy ${a.tag} --force`, { cause: error })
  }
}
