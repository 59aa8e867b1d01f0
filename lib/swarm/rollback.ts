import path from 'node:path'
import { restoreScratchCopy, settleReplacedDatabase, swapIn } from '../db/restore.ts'
import { type Context } from '../stack/context.ts'
import { OpsError } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { confirmDestructive } from '../core/prompt.ts'
import { isDryRun } from '../core/shell.ts'
import { newEvent, type DeployEvent } from '../release/deploy-state.ts'
import { registerWebhook } from '../release/mode.ts'
import { checkout, record } from '../release/release.ts'
import { completeRollback, planRollbackDatabase, rollbackFailed, safetyBackup, type DbPlan, type RollbackRequest } from '../release/rollback.ts'
import { runJob } from './job.ts'
import { botExists, describeRunning, scaleBot, waitForUpdate } from './service.ts'
import { deployStack, isWebhook } from './stack.ts'

// rollback on a Swarm, by the rules of lib/release/rollback.ts (the database plan, its log lines,
// the event, the one failure path): the switch is a `docker stack deploy` of the target and the
// gate its converged tasks; "stop the bot" is scaling it to 0, which the target's deploy undoes.

/** As on one host, less what a Swarm does by itself: nodes pull the image; the exports go to BACKUP_DIR. */
export type SwarmRollback = Omit<RollbackRequest, 'pull' | 'exportRoot'>

export async function rollBackOnSwarm(ctx: Context, request: SwarmRollback): Promise<DeployEvent | null> {
  if (request.target === null) {
    await stopBot(ctx, 'Stopping application services')
    return null
  }
  const r = { ...request, target: request.target }
  let event = record(ctx, { ...newEvent('rollback', r.target, r.from, r.triggeredBy), rollback_of: r.rollbackOf })
  let database = 'not touched'
  try {
    const { revision, plan } = await planRollbackDatabase(ctx, r, r.target, targetHead)
    if (r.confirm) await confirmDestructive(`Roll back to ${r.target}. ${describePlan(plan)}`, r.confirm.yes)
    event = record(ctx, { ...event, schema_revision_before: revision })
    const safety = r.safetyBackup ? await safetyBackup(ctx, r.from) : null
    if (safety) event = record(ctx, { ...event, backup_created: true, backup_id: safety.backup_id })
    // As on one host: polling mode stops the bot first; in webhook mode it serves through the
    // database step unless the caller stops it for the swap (a failed deploy's migration).
    const stopFirst = (r.stopFirst || !isWebhook(ctx.cfg)) && !r.targetServing
    let stopped = false
    if (stopFirst) stopped = await stopBot(ctx, 'Stopping current services')
    log.info(`Checking out ${r.target}`)
    await checkout(ctx, r.target)
    let aside: string | null = null
    try {
      if (plan.action === 'restore') {
        log.info('Restoring database backup')
        const scratch = await restoreScratchCopy(ctx, { file: plan.backup.file_path, record: plan.backup })
        if (!stopped && r.swapStops.length) stopped = await stopBot(ctx, 'Stopping application services')
        log.info('Dropping existing database')
        aside = await swapIn(ctx.db, scratch, ctx.db.database)
        database = `restored from backup ${plan.backup.backup_id}`
      } else if (plan.action === 'downgrade') {
        log.info(`Downgrading database schema to ${plan.to}`)
        database = `downgraded to ${plan.to}, perhaps halfway`
        const result = await runJob(ctx, r.from ?? r.target, 'downgrade', `alembic downgrade ${plan.to}`)
        if (result.exitCode !== 0) throw new OpsError('restore_failed', `alembic downgrade failed: ${result.stderr.trim().split('\n').pop()}`)
      }
      const since = new Date()
      if (!r.targetServing || stopped) {
        log.info('Starting services')
        await deployStack(ctx, r.target)
      }
      const outcome = await waitForUpdate(ctx, r.target, since)
      if (outcome.state !== 'completed') throw new OpsError('health_failed', `${r.target} is running but not healthy: ${outcome.message}`)
      log.info('Health checks passed')
      await registerWebhook(ctx.cfg)
    } finally {
      if (plan.action === 'restore') await settleReplacedDatabase(ctx, aside, { reason: `safety backup: ${ctx.db.database} as it was before the rollback to ${r.target} (${r.undoing})`, exportSince: { backup: plan.backup, dir: path.join(ctx.cfg.BACKUP_DIR, 'exports', event.event_id) } })
    }
    return await completeRollback(ctx, r, r.target, event, plan, null)
  } catch (error) {
    return rollbackFailed(ctx, r, event, database, (c) => describeRunning(c.cfg), error)
  }
}

/** Scales the bot to 0 (the target's stack deploy brings its replicas back); false: there was none. */
async function stopBot(ctx: Context, line: string): Promise<boolean> {
  if (!isDryRun() && !(await botExists(ctx.cfg))) return false
  log.info(line)
  await scaleBot(ctx.cfg, 0)
  return true
}

/** The target's alembic head, asked of its image as a one-off task. */
async function targetHead(ctx: Context, target: string): Promise<string | null> {
  const out = await runJob(ctx, target, 'heads', 'alembic heads')
  return /^(\w+) \(head\)/m.exec(out.stdout)?.[1] ?? null
}

function describePlan(plan: DbPlan): string {
  if (plan.action === 'restore') return `The database goes back to backup ${plan.backup.backup_id} (taken ${plan.backup.created_at}); rows it does not hold are exported as CSV once the bot has stopped.`
  if (plan.action === 'downgrade') return `The schema is downgraded to ${plan.to} (--keep-data); columns and tables added since are dropped.`
  return 'The database is kept as it is: no data is lost.'
}
