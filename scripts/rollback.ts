// rollback [target-version]: back to an earlier release, the database kept when its schema fits
// the target and restored from the target's pre-deployment backup when it is ahead
// (contract: rollback.sh).
import path from 'node:path'
import { createBackup } from '../lib/db/backup.ts'
import { readIndex, type BackupRecord } from '../lib/db/backup-index.ts'
import { flag, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { composeStop } from '../lib/commands/compose.ts'
import { confirmDestructive } from '../lib/core/prompt.ts'
import { openContext, requireCompose, type Context } from '../lib/core/config.ts'
import { countRowsNotIn } from '../lib/db/data-export.ts'
import { takeDeployLock } from '../lib/core/lock.ts'
import { deployedVersions, lastGoodBefore, newEvent, readEvents, readState, type DeployEvent, type DeployState } from '../lib/release/deploy-state.ts'
import { OpsError, messageOf } from '../lib/core/errors.ts'
import { formatAge, formatCount } from '../lib/core/format.ts'
import { log } from '../lib/core/log.ts'
import { isEntryPoint, runMain } from '../lib/core/main.ts'
import { ensurePostgresImage } from '../lib/db/pitr-image.ts'
import { endWatch } from '../lib/release/watch.ts'
import { checkout, downgradeCommand, healthGate, migrationHeadCommand, record, recordDeployed, schemaRevision, switchVersion } from '../lib/release/release.ts'
import { releaseImageForRollback } from '../lib/release/prune.ts'
import { replaceLiveWith, settleReplacedDatabase } from '../lib/db/restore.ts'
import { isWebhookMode } from '../lib/release/bluegreen.ts'
import { registerWebhook } from '../lib/release/mode.ts'
import { capture, isDryRun, run, tryRun } from '../lib/core/runner.ts'

const spec = {
  name: 'rollback',
  summary: 'Roll back to an earlier release (default: the last successful deployment before the current one)',
  usage: 'rollback [target-version] [--yes] [--dry-run] [--restore-db | --keep-data] [--stop-first]',
  positionals: [{ name: 'target-version', description: 'a version deployed successfully before (default: the last good one)' }],
  maxPositionals: 1,
  options: {
    yes: { type: 'boolean', short: 'y', description: 'Do not ask for confirmation (required when there is no terminal)' },
    'dry-run': { type: 'boolean', short: 'n', description: 'Print the plan; change nothing' },
    'restore-db': { type: 'boolean', description: "Restore the target's pre-deployment backup even when the schema already fits" },
    'keep-data': { type: 'boolean', description: 'When the database is ahead, downgrade its schema instead of restoring a backup' },
    'stop-first': { type: 'boolean', description: 'Webhook mode: stop the current version before the database step and the switch' },
  },
  exitCodes: [
    [0, 'Rollback successful'],
    [1, 'Rollback failed'],
    [2, 'Target version not found (the versions that can be rolled back to are listed)'],
    [3, 'Backup restoration failed (the safety backup was put back)'],
  ],
  notes: [
    'The database: kept as it is when its schema revision equals the target\'s head (no data lost);',
    'when it is ahead, the target\'s pre-deployment backup is restored, after exporting the rows written',
    'since as CSV, unless --keep-data downgrades the schema instead. A safety backup is always taken first.',
    'Webhook mode: blue-green; the database step runs while the current version still serves, so it',
    'must cope with the target\'s schema for those seconds, else use --stop-first.',
  ],
  examples: ['rollback', 'rollback v1.1.0 --yes', 'rollback --dry-run', 'rollback v1.1.0 --keep-data'],
} satisfies CliSpec

type DbPlan = { action: 'keep' } | { action: 'restore'; backup: BackupRecord } | { action: 'downgrade'; to: string }

export interface RollbackOptions {
  target: string | undefined
  yes: boolean
  restoreDb: boolean
  keepData: boolean
  stopFirst: boolean
}

// The CLI, when this file is the one node started; a test imports the command without running it.
if (isEntryPoint(import.meta.url)) {
  await runMain(spec, { exitCodes: { target_not_found: 2, restore_failed: 3 }, asDeployUser: true }, async (cli) => {
    const opts = rollbackOptions(cli)
    const ctx = await openContext()
    const lock = await takeDeployLock(ctx.cfg, `rollback ${opts.target ?? ''}`.trim())
    try {
      await rollback(ctx, opts)
    } finally {
      lock.release()
    }
  })
}

/** The contract's steps in order; a failed database step puts the database back (exit 3). */
export async function rollback(ctx: Context, opts: RollbackOptions): Promise<void> {
  await endWatch(ctx.cfg, `a rollback${opts.target ? ` to ${opts.target}` : ''}`)
  const state = readState(ctx.cfg.ARTIFACTS_FILE, ctx.cfg.legacyArtifactsFile)
  const current = state.current?.artifact_id ?? null
  const target = determineTarget(ctx, opts.target, current)
  log.info(`Starting rollback from ${current ?? 'nothing'} to ${target}`)
  await releaseImageForRollback(ctx, target)
  if (ctx.cfg.DB_MODE === 'compose') await ensurePostgresImage(ctx.cfg.POSTGRES_IMAGE)
  const revision = await schemaRevision(ctx.db)
  const plan = await planDatabase(ctx, target, current, revision, opts)
  await confirmRollback(ctx, target, plan, opts.yes)
  let event = record(ctx, { ...newEvent('rollback', target, current, ctx.cfg.TRIGGERED_BY), schema_revision_before: revision })
  const safety = await safetyBackup(ctx, current)
  event = record(ctx, { ...event, backup_created: !isDryRun(), backup_id: safety?.backup_id ?? null })
  // Blue-green (webhook mode): the current version serves until the target has passed its gate.
  const stopFirst = opts.stopFirst || !isWebhookMode(ctx.cfg)
  if (stopFirst) {
    log.info('Stopping current services')
    await run(composeStop(requireCompose(ctx), ['bot'], ctx.cfg.STOP_TIMEOUT))
  }
  log.info(`Checking out ${target}`)
  await checkout(ctx, target)
  const replaced = await applyDatabasePlan(ctx, plan, current, safety, stopFirst)
  log.info('Starting services')
  let downtime: number | null
  try {
    downtime = await switchVersion(ctx, target, { stopFirst })
    await requireHealthy(ctx, target)
    await registerWebhook(ctx.cfg)
  } finally {
    // Also when the target fails to start: the rows the backup lacks are exported all the same.
    if (plan.action === 'restore') await settleReplacedDatabase(ctx, replaced, { reason: `safety backup: ${ctx.db.database} as it was before the rollback to ${target}`, exportSince: { backup: plan.backup, dir: path.join(ctx.cfg.BACKUP_DIR, 'exports', event.event_id) } })
  }
  const after = isDryRun() ? null : await schemaRevision(ctx.db)
  await recordRollback(ctx, state, target, { ...event, downtime_seconds: downtime, migration_applied: plan.action !== 'keep', schema_revision_after: after })
  log.info(isDryRun() ? 'Dry run complete: nothing was changed' : `Rollback successful: ${target}`)
}

function rollbackOptions(cli: ParsedCli): RollbackOptions {
  if (flag(cli, 'restore-db') && flag(cli, 'keep-data')) throw new OpsError('usage', '--restore-db and --keep-data contradict each other')
  return { target: cli.positionals[0], yes: flag(cli, 'yes'), restoreDb: flag(cli, 'restore-db'), keepData: flag(cli, 'keep-data'), stopFirst: flag(cli, 'stop-first') }
}

function determineTarget(ctx: Context, wanted: string | undefined, current: string | null): string {
  const events = readEvents(ctx.cfg.AUDIT_LOG)
  const candidates = deployedVersions(events).filter((v) => v !== current)
  const target = wanted ?? lastGoodBefore(events, current)
  if (target && candidates.includes(target)) return target
  const list = candidates.length ? candidates.join(', ') : 'none (no earlier successful deployment is recorded)'
  const why = wanted ? (wanted === current ? `${wanted} is the current version` : `${wanted} was never deployed successfully here`) : 'there is no earlier successful deployment'
  throw new OpsError('target_not_found', `Target version not found: ${why}. Versions that can be rolled back to: ${list}`)
}

/** Compares the database's schema revision with the target's head, before anything changes. */
async function planDatabase(ctx: Context, target: string, current: string | null, revision: string | null, opts: RollbackOptions): Promise<DbPlan> {
  const head = await targetHead(ctx, target)
  const backup = preDeploymentBackupOf(ctx, target)
  log.info(`Database schema: ${revision ?? 'none'}; ${target} expects ${head ?? 'none'}`)
  if (revision === head && !opts.restoreDb) return { action: 'keep' }
  if (revision !== head && opts.keepData) {
    if (!head || !current) throw new OpsError('restore_failed', `Cannot downgrade the schema to ${head ?? 'nothing'} with --keep-data (nothing changed)`)
    return { action: 'downgrade', to: head }
  }
  if (!backup) throw new OpsError('restore_failed', `The database is at ${revision ?? 'no revision'} but ${target} expects ${head ?? 'none'}, and there is no pre-deployment backup taken while ${target} ran. Use --keep-data to downgrade the schema instead (nothing changed)`)
  return { action: 'restore', backup }
}

async function targetHead(ctx: Context, target: string): Promise<string | null> {
  const out = await capture(migrationHeadCommand(requireCompose(ctx), target))
  return /^(\w+) \(head\)/m.exec(out)?.[1] ?? null
}

/** The backup taken just before the deploy that replaced `target`: the database as `target` left it. */
function preDeploymentBackupOf(ctx: Context, target: string): BackupRecord | null {
  return [...readIndex(ctx.cfg.BACKUP_DIR).backups].reverse().find((b) => b.backup_type === 'pre_deployment' && b.artifact_id === target && b.verified) ?? null
}

async function confirmRollback(ctx: Context, target: string, plan: DbPlan, yes: boolean): Promise<void> {
  let loss = 'The database is kept as it is: no data is lost.'
  if (plan.action === 'restore') {
    const rows = await countRowsNotIn(ctx.db, ctx.db.database, plan.backup)
    const written = Object.entries(rows).map(([t, n]) => `${formatCount(n)} in ${t.replace(/^public\./, '')}`).join(', ') || 'none found'
    loss = `The database goes back to backup ${plan.backup.backup_id} (taken ${plan.backup.created_at}, ${formatAge((Date.now() - Date.parse(plan.backup.created_at)) / 1000)} ago). Rows it does not hold: ${written}; they are exported as CSV once the bot has stopped.`
  }
  if (plan.action === 'downgrade') loss = `The schema is downgraded to ${plan.to} (--keep-data); columns and tables added since are dropped.`
  log.info(loss)
  await confirmDestructive(`Roll back to ${target}. ${loss}`, yes)
}

async function safetyBackup(ctx: Context, current: string | null): Promise<BackupRecord | null> {
  log.info('Creating safety backup')
  const backup = await createBackup(ctx.cfg, ctx.db, { type: 'manual', artifactId: current, reason: 'safety backup before rollback' })
  return isDryRun() ? null : backup
}

/**
 * The bot is stopped. A restore swaps the verified backup in and returns the replaced database
 * (kept until its rows are exported); a downgrade runs the current version's alembic. A failure
 * leaves or puts the database back as it was, restarts the current version: exit 3.
 */
async function applyDatabasePlan(ctx: Context, plan: DbPlan, current: string | null, safety: BackupRecord | null, currentStopped: boolean): Promise<string | null> {
  if (plan.action === 'keep') return null
  try {
    if (plan.action === 'restore') {
      log.info('Restoring database backup')
      return await replaceLiveWith(ctx, plan.backup, [])
    }
    log.info(`Downgrading database schema to ${plan.to}`)
    const result = await tryRun(downgradeCommand(requireCompose(ctx), current ?? '', plan.to))
    if (result.exitCode !== 0) throw new OpsError('restore_failed', `alembic downgrade failed: ${result.stderr.trim().split('\n').pop()}`)
    return null
  } catch (error) {
    log.error(`Database ${plan.action} failed: ${messageOf(error)}`)
    // A failed restore never reached the live database (it is swapped in whole or not at all);
    // a failed downgrade may have changed it halfway.
    if (plan.action === 'downgrade' && safety) {
      log.info(`Putting the safety backup ${safety.backup_id} back`)
      await settleReplacedDatabase(ctx, await replaceLiveWith(ctx, safety, []), { reason: `safety backup: ${ctx.db.database} after a failed downgrade to ${plan.to}` })
    }
    // In a blue-green rollback the current version never stopped: only its checkout goes back.
    if (current) await checkout(ctx, current).then(() => (currentStopped ? switchVersion(ctx, current, { stopFirst: true }) : null)).catch((e) => log.error(`Could not restart ${current}: ${messageOf(e)}`))
    throw new OpsError('restore_failed', `Backup restoration failed; the database is as it was before the rollback and ${current ?? 'nothing'} restarted`, { cause: error })
  }
}

async function requireHealthy(ctx: Context, target: string): Promise<void> {
  const gate = await healthGate(ctx)
  if (!gate.passed) throw new OpsError('health_failed', `${target} is running but not healthy: ${gate.reason}`)
  log.info('Health checks passed')
}

async function recordRollback(ctx: Context, state: DeployState, target: string, event: DeployEvent): Promise<void> {
  await recordDeployed(ctx, { state, tag: target, event, rollbackFrom: state.current?.artifact_id ?? null, message: `Rolled back to ${target} (from ${state.current?.artifact_id ?? 'nothing'})` })
}
