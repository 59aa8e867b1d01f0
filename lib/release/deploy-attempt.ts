import fs from 'node:fs'
import { createBackup } from '../db/backup.ts'
import type { BackupRecord } from '../db/backup-index.ts'
import { findBackup, readIndex } from '../db/backup-index.ts'
import type { Context } from '../stack/context.ts'
import { assertValid } from '../core/deployment-config.ts'
import { readEnvFile } from '../core/env-file.ts'
import { OpsError, messageOf, type ErrorKind } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { notify } from '../core/notify.ts'
import { looksTransient, retry } from '../core/retry.ts'
import { $read, isDryRun } from '../core/shell.ts'
import { gitEnv } from '../commands/git.ts'
import { completeEvent, newEvent, readEvents, type DeployEvent, type DeployState } from './deploy-state.ts'
import { checkout, record, recordDeployed, resolveRef, schemaRevision } from './release.ts'
import { RollbackFailed, type RollbackRequest } from './rollback.ts'

// What a deploy does the same on one host (scripts/deploy.ts) and on a Swarm (lib/swarm/deploy.ts):
// the run's state (its Attempt), the steps that do not depend on the orchestrator (the pre-flight
// verdict, the backup, the migrations' bookkeeping, the record of success), and the one failure
// path, which brings the previous version back by the orchestrator's own rollback.

/** Back to the previous version after a failure (the orchestrator's rollback); the event it closed. */
export type RollBackAttempt = (a: Attempt, f: Failure) => Promise<DeployEvent | null>

export interface DeployOptions {
  tag: string
  yes: boolean
  force: boolean
  skipChecks: boolean
  build: boolean
  stopFirst: boolean
}

/** What one deploy knows as it goes: the version it replaces, its backup, its audit event. */
export interface Attempt {
  ctx: Context
  tag: string
  stopFirst: boolean
  state: DeployState
  previous: string | null
  backup: BackupRecord | null
  event: DeployEvent
  rollBack: RollBackAttempt
}

export function begin(ctx: Context, state: DeployState, opts: { tag: string; stopFirst: boolean }, rollBack: RollBackAttempt): Attempt {
  const previous = state.current?.artifact_id ?? null
  return { ctx, tag: opts.tag, stopFirst: opts.stopFirst, state, previous, backup: null, event: record(ctx, newEvent('deploy', opts.tag, previous, ctx.cfg.TRIGGERED_BY)), rollBack }
}

export function update(a: Attempt, changes: Partial<DeployEvent>): void {
  a.event = record(a.ctx, { ...a.event, ...changes })
}

/** Closes the run's event unless a step already did (abort, the backup, the success). */
export function settleEvent(a: Attempt, status: DeployEvent['status'], reason: string | null): void {
  if (a.event.status !== 'in_progress') return
  a.event = record(a.ctx, completeEvent(status === 'success' ? { ...a.event, health_check_passed: true } : a.event, status, reason))
}

export type Stage = 'checkout' | 'pull' | 'migration' | 'switch' | 'health'

export interface Failure {
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

/** The backup as the index has it now (verified since the run began?), else as the run knew it. */
function fresh(ctx: Context, backup: BackupRecord): BackupRecord {
  return findBackup(readIndex(ctx.cfg.BACKUP_DIR), backup.backup_id) ?? backup
}

/** A pre-flight check's problem: `message`, or the last line of the command's stderr. */
export function checkFailure(result: { exitCode: number | null; stderr: string }, message?: string): string | null {
  return result.exitCode === 0 ? null : (message ?? (result.stderr.trim().split('\n').pop() || `exit ${result.exitCode}`))
}

/** The line of a migration tool's output that says what broke, not the trailing links and notes. */
function migrationFailureReason(output: string): string | null {
  const lines = output.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('(Background on this error'))
  return [...lines].reverse().find((l) => /\b\w*(Error|Exception)\b|ERROR:|error:/.test(l)) ?? lines.at(-1) ?? null
}

// ---- the one failure path ------------------------------------------------------------------------

/**
 * Every failed deploy ends here. Before the migrations nothing the bot uses has changed: the
 * checkout is put back. From the migrations on, the previous version is brought back, with the
 * database restored when the migrations changed it. Then the event, the notification, the exit.
 */
export async function abort(a: Attempt, f: Failure): Promise<never> {
  const { headline, kind } = describeStage(f.stage)
  log.error(`${headline}: ${f.reason}`)
  let status: DeployEvent['status'] = 'failed'
  let outcome = `${a.previous ?? 'Nothing'} is still running.`
  let told = false
  if (f.stage === 'checkout' || f.stage === 'pull') {
    if (a.previous) await checkout(a.ctx, a.previous).catch((e) => log.warn(`Could not check out ${a.previous} again: ${messageOf(e)}`))
  } else {
    log.error('Deployment failed - initiating rollback')
    log.info(a.previous ? `Rolling back to ${a.previous}` : 'Rolling back (no previous version: the bot stays stopped)')
    try {
      const rolledBack = await a.rollBack(a, f)
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
 * The previous version back, as an automated rollback event of its own linked to this deploy. The
 * database goes back to the pre-deployment backup when the migrations changed it (or failed
 * halfway): restored beside the live one while the bot still runs, swapped in once it is stopped,
 * and only then is every row the backup lacks exported from the replaced database before it is
 * dumped as a safety backup and dropped. What differs by orchestrator (pulling, exports) the caller adds.
 */
export function undoRequest(a: Attempt, f: Failure): Omit<RollbackRequest, 'pull' | 'exportRoot'> {
  const previousServing = f.previousServing ?? false
  return {
    target: a.previous,
    from: a.tag,
    triggeredBy: 'automated',
    rollbackOf: a.event.event_id,
    undoing: `the failed deploy of ${a.tag}`,
    context: `Deployment of ${a.tag} failed at the ${f.stage} step: ${f.reason}.`,
    // A failed migration may have changed data without moving the revision (one transaction per migration).
    db: { touched: f.stage === 'migration', keepData: false, expects: a.event.schema_revision_before, backup: a.backup ? fresh(a.ctx, a.backup) : null },
    safetyBackup: false,
    confirm: null,
    stopFirst: a.stopFirst,
    targetServing: previousServing,
    swapStops: previousServing ? [] : ['bot'],
    recordAs: null,
  }
}

// ---- the steps both orchestrators take -------------------------------------------------------------

/**
 * We hold the deploy lock, so an in_progress event is one nobody runs any more (kill -9, power
 * loss): report it and close it before going on.
 */
export function settleInterruptedRuns(ctx: Context): void {
  for (const event of readEvents(ctx.cfg.AUDIT_LOG).filter((e) => e.status === 'in_progress')) {
    log.warn(`An earlier ${event.event_type} of ${event.artifact_id} (started ${event.started_at} by ${event.operator}, pid ${event.pid}) was interrupted; marking it failed.${event.backup_id ? ` Its pre-deployment backup is ${event.backup_id}.` : ''} This run redoes every step.`)
    record(ctx, completeEvent(event, 'failed', 'interrupted: the process running it is gone'))
  }
}

/** The data model's rules (shared with setup-droplet), and a file only its owner can read. */
export function validateEnvFile(ctx: Context): void {
  const file = ctx.cfg.envFile
  const vars = readEnvFile(file)
  if (!vars) throw new OpsError('config', `${file} does not exist (setup-droplet creates it from deployment/.env.production.template)`)
  const mode = fs.statSync(file).mode & 0o777
  if (mode & 0o077) throw new OpsError('config', `${file} is mode ${mode.toString(8)}; it holds secrets and must be 600 (chmod 600 ${file})`)
  assertValid(file, vars, vars.TELEGRAM_WEBHOOK_URL ? 'webhook' : 'polling')
}

export async function resolveTag(ctx: Context, tag: string): Promise<string> {
  // --force, --prune: a tag moved or deleted upstream moves here too (a release tag means one commit)
  await retry(() => $read({ env: gitEnv(), timeoutMs: 5 * 60_000 })`git -C ${ctx.cfg.APP_DIR} fetch --quiet --tags --force --prune origin`, { what: 'git fetch', isTransient: looksTransient })
  const sha = await resolveRef(ctx.cfg.APP_DIR, tag)
  if (!sha) throw new OpsError('usage', `Tag ${tag} does not exist in ${ctx.cfg.APP_DIR} (after git fetch)`)
  return sha
}

/** A named go/no-go check: its problem, or null. */
export type Check = [string, () => Promise<string | null>]

/** Every check runs (the operator sees all that is wrong at once); any problem refuses, nothing changed. */
export async function goNoGo(skip: boolean, checks: () => Check[]): Promise<void> {
  if (skip) {
    log.warn('Pre-flight checks skipped (--skip-checks)')
    return
  }
  const failed: string[] = []
  for (const [name, check] of checks()) {
    const problem = await check().catch((e: unknown) => messageOf(e))
    if (problem) failed.push(`${name}: ${problem}`)
    log.debug(`Pre-flight ${name}: ${problem ?? 'ok'}`)
  }
  if (failed.length) throw new OpsError('command_failed', `Pre-flight checks failed (nothing changed): ${failed.join('; ')}`)
  log.info('Pre-flight checks passed')
}

export async function preDeploymentBackup(a: Attempt): Promise<void> {
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

/** `migrate` runs the new image's migrations while the old version still serves; the revisions around it go in the event. */
export async function runMigrations(a: Attempt, migrate: () => Promise<{ exitCode: number | null; stdout: string; stderr: string }>): Promise<void> {
  log.info('Running database migrations')
  const before = isDryRun() ? null : await schemaRevision(a.ctx.db)
  const result = await migrate()
  const after = isDryRun() ? null : await schemaRevision(a.ctx.db)
  update(a, { schema_revision_before: before, schema_revision_after: after, migration_applied: before !== after })
  if (result.exitCode !== 0) await abort(a, { stage: 'migration', reason: migrationFailureReason(result.stderr + '\n' + result.stdout) ?? `exit ${result.exitCode}` })
  if (!isDryRun()) log.info('Migrations applied successfully')
}

export async function checkoutRelease(a: Attempt): Promise<void> {
  log.info(`Checking out tag ${a.tag}`)
  await checkout(a.ctx, a.tag).catch((error: unknown) => abort(a, { stage: 'checkout', reason: messageOf(error) }))
}

/**
 * The new version runs and is healthy. Should recording it fail (a full disk, a file someone made
 * unwritable), say exactly that: it is not a failed deploy, and nothing is rolled back.
 */
export async function recordSuccess(a: Attempt): Promise<void> {
  const downtime = a.event.downtime_seconds
  try {
    await recordDeployed(a.ctx, { state: a.state, tag: a.tag, event: a.event, rollbackFrom: null, message: `Deployed ${a.tag}${downtime === null ? '' : ` (downtime ${downtime.toFixed(1)}s)`}` })
  } catch (error) {
    throw new OpsError('corrupt_state', `${a.tag} is running and healthy, but recording it failed: ${messageOf(error)}. ${a.ctx.cfg.ARTIFACTS_FILE} and APP_VERSION in ${a.ctx.cfg.envFile} may still name ${a.previous ?? 'nothing'}; fix the cause and run deploy ${a.tag} --force`, { cause: error })
  }
}
