import os from 'node:os'
import path from 'node:path'
import { createBackup } from '../db/backup.ts'
import { readIndex, type BackupRecord } from '../db/backup-index.ts'
import { countRowsNotIn } from '../db/data-export.ts'
import { ensurePostgresImage } from '../db/pitr-image.ts'
import { replaceLiveWith, settleReplacedDatabase } from '../db/restore.ts'
import { composeEnv } from '../commands/compose.ts'
import { serviceContainers } from '../commands/docker.ts'
import { TOOLKIT_DIR } from '../core/config.ts'
import { requireCompose, type Context } from '../stack/context.ts'
import { OpsError, messageOf, type ErrorKind } from '../core/errors.ts'
import { formatAge, formatCount } from '../core/format.ts'
import { log } from '../core/log.ts'
import { notify } from '../core/notify.ts'
import { confirmDestructive } from '../core/prompt.ts'
import { $, isDryRun, $read } from '../core/shell.ts'
import { completeEvent, newEvent, type DeployEvent, type DeployState } from './deploy-state.ts'
import { isWebhookMode } from './bluegreen.ts'
import { checkHealth } from '../stack/health.ts'
import { registerWebhook } from './mode.ts'
import { botRun, checkout, healthGate, record, stopBot, recordDeployed, schemaRevision, switchVersion } from './release.ts'
import { releaseImageForRollback } from './prune.ts'
import { dayjs } from '../core/time.ts'

// The one rollback, for deploy's automatic rollback, rollback.sh and the watcher: one set of rules
// deciding whether the database goes back with the code (planDatabase), one order of steps, and
// one failure path (the rollback event closed `failed` with the reason, one notification saying
// what runs now and whether the database was touched, the contract's exit code).

export type DbPlan = { action: 'keep' } | { action: 'restore'; backup: BackupRecord } | { action: 'downgrade'; to: string }

export interface DbFacts {
  target: string
  /** the version being left (a downgrade runs its alembic, which knows the revisions it added) */
  current: string | null
  /** the database's schema revision now */
  revision: string | null
  /** the revision the target runs with */
  expects: string | null
  /** something wrote to the database that the target cannot live with although the revision may
   * match (a migration that failed halfway), or the operator asked for the backup (--restore-db) */
  touched: boolean
  /** --keep-data: downgrade the schema instead of restoring a backup */
  keepData: boolean
  /** the database as the target left it: its pre-deployment backup */
  backup: BackupRecord | null
}

/**
 * Code only when the database is what the target expects and nothing touched it; otherwise the
 * target's own backup is restored (or, with --keep-data, the schema downgraded). Refuses, before
 * anything changed, when the rule asks for a backup that does not exist.
 */
export function planDatabase(f: DbFacts): DbPlan {
  if (f.revision === f.expects && !f.touched) return { action: 'keep' }
  if (f.keepData && f.revision !== f.expects) {
    if (!f.expects || !f.current) throw new OpsError('restore_failed', `Cannot downgrade the schema to ${f.expects ?? 'nothing'} with --keep-data (nothing changed)`)
    return { action: 'downgrade', to: f.expects }
  }
  if (!f.backup) {
    const why = f.revision === f.expects ? 'the database was changed by a failed migration' : `the database is at ${f.revision ?? 'no revision'} but ${f.target} expects ${f.expects ?? 'none'}`
    throw new OpsError('restore_failed', `${why}, and there is no pre-deployment backup taken while ${f.target} ran. Use --keep-data to downgrade the schema instead (nothing changed)`)
  }
  return { action: 'restore', backup: f.backup }
}

/** The backup taken just before the deploy that replaced `target`: the database as `target` left it. */
export function preDeploymentBackupOf(backups: readonly BackupRecord[], target: string): BackupRecord | null {
  return [...backups].reverse().find((b) => b.backup_type === 'pre_deployment' && b.artifact_id === target && b.verified) ?? null
}

export interface RollbackRequest {
  /** the version to run again; null when there is none (a failed first deploy): the bot is stopped */
  target: string | null
  /** the version being left */
  from: string | null
  triggeredBy: DeployEvent['triggered_by']
  /** the deploy event this rollback undoes (automatic rollbacks) */
  rollbackOf: string | null
  /** what is undone, for the log, the safety backup and the notification: "the failed deploy of v1.3.0" */
  undoing: string
  /** the notification's opening on failure: what led here ("Deployment of v1.3.0 failed at the health step: ...") */
  context: string | null
  /** the database rule's inputs the caller knows; `expects` unknown: read from the target's image */
  db: Pick<DbFacts, 'touched' | 'keepData'> & { expects?: string | null; backup?: BackupRecord | null }
  /** the target's image may be gone from this host (rollback.sh, the watcher); deploy's previous ran a moment ago */
  pull: boolean
  /** rollback.sh and the watcher take one; deploy has its pre-deployment backup */
  safetyBackup: boolean
  /** rollback.sh: say what happens to the data, and ask unless --yes */
  confirm: { yes: boolean } | null
  /** stop the current bot before the database step (polling mode, --stop-first) */
  stopFirst: boolean
  /** blue-green: the target never stopped serving (the new version never took over): no switch */
  targetServing: boolean
  /** the services the database swap stops (deploy: the failed new bot, unless the target serves) */
  swapStops: string[]
  /** artifacts.json and APP_VERSION move to the target (a recorded release is left); deploy's previous is still recorded */
  recordAs: { state: DeployState; message: string | null } | null
  /** where rows the restored backup lacks are exported, by event */
  exportRoot: string
}

/**
 * rollback.sh's and the watcher's rollback: from the recorded release back to an earlier one,
 * whose image may be gone from this host, a safety backup first, artifacts.json moved to it.
 */
export function fromRecordedRelease(ctx: Context, o: Pick<RollbackRequest, 'triggeredBy' | 'rollbackOf' | 'undoing' | 'context' | 'db'> & { state: DeployState; target: string; yes: boolean; stopFirst: boolean; message: string | null }): RollbackRequest {
  return {
    target: o.target,
    from: o.state.current?.artifact_id ?? null,
    triggeredBy: o.triggeredBy,
    rollbackOf: o.rollbackOf,
    undoing: o.undoing,
    context: o.context,
    db: o.db,
    pull: true,
    safetyBackup: true,
    confirm: { yes: o.yes },
    // Blue-green (webhook mode): the current version serves until the target has passed its gate.
    stopFirst: o.stopFirst || !isWebhookMode(ctx.cfg),
    targetServing: false,
    swapStops: [],
    recordAs: { state: o.state, message: o.message },
    exportRoot: path.join(ctx.cfg.BACKUP_DIR, 'exports'),
  }
}

/** The rollback itself failed: already logged, recorded and told; `kind` picks the exit code. */
export class RollbackFailed extends OpsError {
  constructor(kind: ErrorKind, message: string, cause: unknown) {
    super(kind, message, { cause, alreadyLogged: true, alreadyNotified: true })
  }
}

/** What the rollback did to the database so far, for the failure message; null: not touched. */
interface DbTrail {
  what: string | null
}

/**
 * Back to `target`, in the contract's order: pull, plan, confirm, safety backup, stop, checkout,
 * database, start, health, record. Returns the closed event (null when there was no target). Any
 * failure ends in `fail`; a refused confirmation closes the event `cancelled`, nothing changed.
 */
export async function rollBack(ctx: Context, r: RollbackRequest): Promise<DeployEvent | null> {
  const db: DbTrail = { what: null }
  if (!r.target) {
    if (r.targetServing) return null
    return stopBot(ctx.cfg, requireCompose(ctx)).then(() => null, (error: unknown) => fail(ctx, r, null, db, error))
  }
  const target = r.target
  let event = record(ctx, { ...newEvent('rollback', target, r.from, r.triggeredBy), rollback_of: r.rollbackOf })
  try {
    if (r.pull) {
      await releaseImageForRollback(ctx, target).catch((error: unknown) => {
        throw new OpsError('command_failed', `the image of ${target} could not be pulled (nothing was changed): ${messageOf(error)}`, { cause: error })
      })
      if (ctx.cfg.DB_MODE === 'compose') await ensurePostgresImage(ctx.cfg.POSTGRES_IMAGE)
    }
    const { revision, plan } = await planRollbackDatabase(ctx, r, target, targetHead)
    if (r.confirm) await confirmRollback(ctx, target, plan, r.confirm.yes)
    event = record(ctx, { ...event, schema_revision_before: revision })
    const safety = r.safetyBackup ? await safetyBackup(ctx, r.from) : null
    if (safety) event = record(ctx, { ...event, backup_created: true, backup_id: safety.backup_id })
    if (r.stopFirst) {
      log.info('Stopping current services')
      await stopBot(ctx.cfg, requireCompose(ctx))
    }
    log.info(`Checking out ${target}`)
    await checkout(ctx, target)
    let downtime: number | null = null
    let replaced: string | null = null
    try {
      replaced = await applyDatabasePlan(ctx, plan, r, safety, db)
      if (!r.targetServing) {
        log.info('Starting services')
        downtime = await switchVersion(ctx, target, { stopFirst: r.stopFirst })
      }
      const gate = await healthGate(ctx)
      if (!gate.passed) throw new OpsError('health_failed', `${target} is running but not healthy: ${gate.reason}`)
      log.info('Health checks passed')
      // A failed switch into webhook mode leaves the target in it: Telegram must reach it.
      await registerWebhook(ctx.cfg)
    } finally {
      // Also when the target fails to start: the rows the backup lacks are exported all the same.
      if (plan.action === 'restore') await settleReplacedDatabase(ctx, replaced, { reason: `safety backup: ${ctx.db.database} as it was before the rollback to ${target} (${r.undoing})`, exportSince: { backup: plan.backup, dir: path.join(r.exportRoot, event.event_id) } })
    }
    return await completeRollback(ctx, r, target, event, plan, downtime)
  } catch (error) {
    return fail(ctx, r, event, db, error)
  }
}

/**
 * The database's schema revision now and what the rule (planDatabase) does with it for `target`,
 * whose expected revision is the caller's, or else asked of its image (`targetHead`).
 */
export async function planRollbackDatabase(ctx: Context, r: Pick<RollbackRequest, 'from' | 'db'>, target: string, targetHead: (ctx: Context, target: string) => Promise<string | null>): Promise<{ revision: string | null; plan: DbPlan }> {
  const revision = await schemaRevision(ctx.db)
  const expects = r.db.expects !== undefined ? r.db.expects : await targetHead(ctx, target)
  log.info(`Database schema: ${revision ?? 'none'}; ${target} expects ${expects ?? 'none'}`)
  const backup = r.db.backup !== undefined ? r.db.backup : preDeploymentBackupOf(readIndex(ctx.cfg.BACKUP_DIR).backups, target)
  return { revision, plan: planDatabase({ target, current: r.from, revision, expects, touched: r.db.touched, keepData: r.db.keepData, backup }) }
}

/** The target runs and is healthy: the event closed `success`, or the release recorded as the target. */
export async function completeRollback(ctx: Context, r: Pick<RollbackRequest, 'from' | 'recordAs'>, target: string, started: DeployEvent, plan: DbPlan, downtime: number | null): Promise<DeployEvent> {
  const after = isDryRun() ? null : await schemaRevision(ctx.db)
  let event: DeployEvent = { ...started, health_check_passed: true, downtime_seconds: downtime, migration_applied: plan.action !== 'keep', schema_revision_after: after }
  if (r.recordAs) await recordDeployed(ctx, { state: r.recordAs.state, tag: target, event, rollbackFrom: r.from, message: r.recordAs.message })
  else event = record(ctx, completeEvent(event, 'success', null))
  log.info('Rollback complete')
  return event
}

/**
 * The one failure path: the log line and the notification say which version runs now (asked of
 * Docker, not assumed), what happened to the database, and the one command to look further; the
 * event is closed `failed` with the reason. Exit 3 when the database step failed, else 1.
 */
function fail(ctx: Context, r: RollbackRequest, event: DeployEvent | null, trail: DbTrail, error: unknown): Promise<never> {
  return rollbackFailed(ctx, r, event, trail.what ?? 'not touched', whatRunsNow, error)
}

/**
 * Both orchestrators' failure path; `whatRuns` asks the one in use. A refused confirmation is
 * no failure: the event is closed `cancelled`, nothing changed.
 */
export async function rollbackFailed(ctx: Context, r: Pick<RollbackRequest, 'target' | 'undoing' | 'context'>, event: DeployEvent | null, database: string, whatRuns: (ctx: Context) => Promise<string>, error: unknown): Promise<never> {
  if (event && error instanceof OpsError && error.kind === 'refused') {
    record(ctx, completeEvent(event, 'cancelled', messageOf(error)))
    throw error
  }
  // one line: the log's ERROR line and the notification carry it whole
  const reason = messageOf(error).replace(/\s*\n\s*/g, ' ').trim()
  const running = await whatRuns(ctx).catch((e: unknown) => `unknown (${messageOf(e)})`)
  const look = path.join(TOOLKIT_DIR, 'scripts', 'status.sh')
  const summary = `Rollback to ${r.target ?? 'nothing'} failed: ${reason}. Running now: ${running}. Database: ${database}. Look further: ${look}`
  log.error(summary)
  if (event) record(ctx, completeEvent(event, 'failed', `${reason}; running now: ${running}; database: ${database}`))
  await notify(ctx.cfg, `${r.context ? `${r.context} ` : ''}ROLLBACK FAILED on ${os.hostname()} (${r.undoing}): ${summary}`)
  const kind: ErrorKind = error instanceof OpsError && error.kind === 'restore_failed' ? 'restore_failed' : 'command_failed'
  throw new RollbackFailed(kind, summary, error)
}

/** The bot containers running now, by the tag of their image and their health. */
async function whatRunsNow(ctx: Context): Promise<string> {
  if (isDryRun()) return 'unchanged (dry run)'
  const running = (await serviceContainers(requireCompose(ctx), 'bot')).filter((c) => c.status === 'running')
  if (running.length === 0) return 'no bot (stopped)'
  const bot = (await checkHealth(ctx, ['bot'])).services.bot
  const versions = await Promise.all(running.map(async (c) => (await $read({ timeoutMs: 30_000 })`docker inspect --format '{{.Config.Image}}' ${c.id}`).stdout.trim().split(':').pop() ?? 'unknown'))
  return `${[...new Set(versions)].join(' and ')} (bot ${bot ? `${bot.status}: ${bot.detail}` : 'unchecked'})`
}

async function targetHead(ctx: Context, target: string): Promise<string | null> {
  const p = requireCompose(ctx)
  const out = (await $read({ env: composeEnv(p, { APP_VERSION: target }), timeoutMs: 120_000 })`${botRun(p)} alembic heads`).stdout.trim()
  return /^(\w+) \(head\)/m.exec(out)?.[1] ?? null
}

async function confirmRollback(ctx: Context, target: string, plan: DbPlan, yes: boolean): Promise<void> {
  let loss = 'The database is kept as it is: no data is lost.'
  if (plan.action === 'restore') {
    const rows = await countRowsNotIn(ctx.db, ctx.db.database, plan.backup)
    const written = Object.entries(rows).map(([t, n]) => `${formatCount(n)} in ${t.replace(/^public\./, '')}`).join(', ') || 'none found'
    loss = `The database goes back to backup ${plan.backup.backup_id} (taken ${plan.backup.created_at}, ${formatAge(dayjs().diff(plan.backup.created_at, 'second'))} ago). Rows it does not hold: ${written}; they are exported as CSV once the bot has stopped.`
  }
  if (plan.action === 'downgrade') loss = `The schema is downgraded to ${plan.to} (--keep-data); columns and tables added since are dropped.`
  log.info(loss)
  await confirmDestructive(`Roll back to ${target}. ${loss}`, yes)
}

export async function safetyBackup(ctx: Context, current: string | null): Promise<BackupRecord | null> {
  log.info('Creating safety backup')
  const backup = await createBackup(ctx.cfg, ctx.db, { type: 'manual', artifactId: current, reason: 'safety backup before rollback' })
  return isDryRun() ? null : backup
}

/**
 * A restore swaps the verified backup in and returns the replaced database (kept until its rows
 * are exported); a downgrade runs the current version's alembic. A failed restore never reached
 * the live database (swapped in whole or not at all); a failed downgrade may have changed it
 * halfway: the safety backup goes back. Either way the current version is started again: exit 3.
 */
async function applyDatabasePlan(ctx: Context, plan: DbPlan, r: RollbackRequest, safety: BackupRecord | null, trail: DbTrail): Promise<string | null> {
  if (plan.action === 'keep') return null
  const current = r.from
  try {
    if (plan.action === 'restore') {
      log.info('Restoring database backup')
      const aside = await replaceLiveWith(ctx, plan.backup, r.swapStops)
      trail.what = `restored from backup ${plan.backup.backup_id}${aside ? ` (the database it replaced, renamed ${aside}, is exported and kept as a safety backup: the log says where)` : ''}`
      return aside
    }
    log.info(`Downgrading database schema to ${plan.to}`)
    trail.what = `downgraded to ${plan.to}, perhaps halfway`
    const p = requireCompose(ctx)
    const result = await $({ env: composeEnv(p, { APP_VERSION: current ?? '' }), timeoutMs: 10 * 60_000, nothrow: true })`${botRun(p)} alembic downgrade ${plan.to}`
    if (result.exitCode !== 0) throw new OpsError('restore_failed', `alembic downgrade failed: ${result.stderr.trim().split('\n').pop()}`)
    return null
  } catch (error) {
    log.error(`Database ${plan.action} failed: ${messageOf(error)}`)
    if (plan.action === 'downgrade' && safety) {
      log.info(`Putting the safety backup ${safety.backup_id} back`)
      trail.what = `put back from safety backup ${safety.backup_id} after the failed downgrade`
      await settleReplacedDatabase(ctx, await replaceLiveWith(ctx, safety, []), { reason: `safety backup: ${ctx.db.database} after a failed downgrade to ${plan.to}` })
    }
    // A recorded release is started again (in a blue-green rollback it never stopped: only its
    // checkout goes back); a failed deploy's new version is not, its failure path says what runs.
    if (current && r.recordAs) await checkout(ctx, current).then(() => (r.stopFirst ? switchVersion(ctx, current, { stopFirst: true }) : null)).catch((e) => log.error(`Could not restart ${current}: ${messageOf(e)}`))
    throw new OpsError('restore_failed', `Backup restoration failed (${messageOf(error)}); the database is as it was before the rollback and ${current ?? 'nothing'} restarted`, { cause: error })
  }
}
