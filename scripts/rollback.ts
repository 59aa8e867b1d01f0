// rollback [target-version]: back to an earlier release, the database kept when its schema fits
// the target and restored from the target's pre-deployment backup when it is ahead
// (contract: rollback.sh).
import os from 'node:os'
import dayjs from 'dayjs'
import { createBackup } from '../lib/backup.ts'
import { readIndex, type BackupRecord } from '../lib/backup-index.ts'
import { flag, type CliSpec } from '../lib/cli.ts'
import { compose } from '../lib/compose.ts'
import { confirmDestructive } from '../lib/confirm.ts'
import { openContext, type Context } from '../lib/context.ts'
import { countRowsSince } from '../lib/data-export.ts'
import { setEnvValue } from '../lib/env-file.ts'
import { takeDeployLock } from '../lib/deploy-lock.ts'
import { completeEvent, deployedVersions, lastGoodBefore, newEvent, readEvents, readState, writeState, type DeployState } from '../lib/deploy-state.ts'
import { OpsError, messageOf } from '../lib/errors.ts'
import { formatCount, isoSeconds } from '../lib/format.ts'
import { log } from '../lib/log.ts'
import { runMain } from '../lib/main.ts'
import { notify } from '../lib/notify.ts'
import { gitResolve, imageDigest, pullImage, requireImage, schemaRevision } from '../lib/release.ts'
import { checkout, exportWrittenSince, healthGate, record, restoreDatabaseFrom, runVersion } from '../lib/release-steps.ts'
import { capture, isDryRun, run, tryRun } from '../lib/runner.ts'

const spec: CliSpec = {
  name: 'rollback',
  summary: 'Roll back to an earlier release (default: the last successful deployment before the current one)',
  usage: 'rollback [target-version] [--yes] [--dry-run] [--restore-db | --keep-data]',
  positionals: [{ name: 'target-version', description: 'a version deployed successfully before (default: the last good one)' }],
  maxPositionals: 1,
  options: {
    yes: { type: 'boolean', short: 'y', description: 'Do not ask for confirmation (required when there is no terminal)' },
    'dry-run': { type: 'boolean', short: 'n', description: 'Print the plan; change nothing' },
    'restore-db': { type: 'boolean', description: "Restore the target's pre-deployment backup even when the schema already fits" },
    'keep-data': { type: 'boolean', description: 'When the database is ahead, downgrade its schema instead of restoring a backup' },
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
  ],
  examples: ['rollback', 'rollback v1.1.0 --yes', 'rollback --dry-run', 'rollback v1.1.0 --keep-data'],
}

type DbPlan = { action: 'keep' } | { action: 'restore'; backup: BackupRecord } | { action: 'downgrade'; to: string }

await runMain(spec, { exitCodes: { target_not_found: 2, restore_failed: 3 } }, async (cli) => {
  if (flag(cli, 'restore-db') && flag(cli, 'keep-data')) throw new OpsError('usage', '--restore-db and --keep-data contradict each other')
  const ctx = await openContext()
  const lock = await takeDeployLock(ctx.cfg, `rollback ${cli.positionals[0] ?? ''}`.trim())
  try {
    const state = readState(ctx.cfg.ARTIFACTS_FILE)
    const current = state.current?.artifact_id ?? null
    const target = determineTarget(ctx, cli.positionals[0], current)
    log.info(`Starting rollback from ${current ?? 'nothing'} to ${target}`)
    await pullImage(ctx.compose!, target, null)
    const plan = await planDatabase(ctx, target, current, flag(cli, 'restore-db'), flag(cli, 'keep-data'))
    await confirmRollback(ctx, target, plan, flag(cli, 'yes'))
    let event = record(ctx, newEvent('rollback', target, current, ctx.cfg.TRIGGERED_BY))
    const safety = await safetyBackup(ctx, current)
    event = record(ctx, { ...event, backup_created: true, backup_id: safety?.backup_id ?? null })
    log.info('Stopping current services')
    await run(compose(ctx.compose!, ['stop', 'bot']))
    log.info(`Checking out ${target}`)
    await checkout(ctx, target)
    await applyDatabasePlan(ctx, plan, current, safety, event.event_id)
    log.info('Starting services')
    const downtime = await runVersion(ctx, target)
    await requireHealthy(ctx, target)
    await recordRollback(ctx, state, target, { ...event, downtime_seconds: downtime, migration_applied: plan.action !== 'keep' })
    log.info(`Rollback successful: ${target}`)
  } finally {
    lock.release()
  }
})

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
async function planDatabase(ctx: Context, target: string, current: string | null, restoreDb: boolean, keepData: boolean): Promise<DbPlan> {
  const revision = await schemaRevision(ctx.db)
  const head = await targetHead(ctx, target)
  const backup = preDeploymentBackupOf(ctx, target)
  log.info(`Database schema: ${revision ?? 'none'}; ${target} expects ${head ?? 'none'}`)
  if (revision === head && !restoreDb) return { action: 'keep' }
  if (revision !== head && keepData) {
    if (!head || !current) throw new OpsError('restore_failed', `Cannot downgrade the schema to ${head ?? 'nothing'} with --keep-data (nothing changed)`)
    return { action: 'downgrade', to: head }
  }
  if (!backup) throw new OpsError('restore_failed', `The database is at ${revision ?? 'no revision'} but ${target} expects ${head ?? 'none'}, and there is no pre-deployment backup taken while ${target} ran. Use --keep-data to downgrade the schema instead (nothing changed)`)
  return { action: 'restore', backup }
}

async function targetHead(ctx: Context, target: string): Promise<string | null> {
  const out = await capture({ ...compose(ctx.compose!, ['run', '--rm', '-T', '--no-deps', 'bot', 'alembic', 'heads'], { APP_VERSION: target }), mutates: false, timeoutMs: 120_000 })
  return /^(\w+) \(head\)/m.exec(out)?.[1] ?? null
}

/** The backup taken just before the deploy that replaced `target`: the database as `target` left it. */
function preDeploymentBackupOf(ctx: Context, target: string): BackupRecord | null {
  return [...readIndex(ctx.cfg.BACKUP_DIR).backups].reverse().find((b) => b.backup_type === 'pre_deployment' && b.artifact_id === target && b.verified) ?? null
}

async function confirmRollback(ctx: Context, target: string, plan: DbPlan, yes: boolean): Promise<void> {
  let loss = 'The database is kept as it is: no data is lost.'
  if (plan.action === 'restore') {
    const rows = await countRowsSince(ctx.db, plan.backup.created_at)
    const written = Object.entries(rows).map(([t, n]) => `${formatCount(n)} in ${t.replace(/^public\./, '')}`).join(', ') || 'none found'
    loss = `The database goes back to backup ${plan.backup.backup_id} (taken ${plan.backup.created_at}, ${ageOf(plan.backup.created_at)} ago). Rows written since: ${written}; they are exported as CSV first.`
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

/** A restore or downgrade that fails puts the safety backup back: exit 3. */
async function applyDatabasePlan(ctx: Context, plan: DbPlan, current: string | null, safety: BackupRecord | null, eventId: string): Promise<void> {
  if (plan.action === 'keep') return
  try {
    if (plan.action === 'restore') {
      await exportWrittenSince(ctx, plan.backup, eventId)
      log.info('Restoring database backup')
      await restoreDatabaseFrom(ctx, plan.backup)
    } else {
      log.info(`Downgrading database schema to ${plan.to}`)
      const result = await tryRun({ ...compose(ctx.compose!, ['run', '--rm', '-T', '--no-deps', 'bot', 'alembic', 'downgrade', plan.to], { APP_VERSION: current! }), timeoutMs: 10 * 60_000 })
      if (result.exitCode !== 0) throw new OpsError('restore_failed', `alembic downgrade failed: ${result.stderr.trim().split('\n').pop()}`)
    }
  } catch (error) {
    log.error(`Database ${plan.action} failed: ${messageOf(error)}`)
    if (safety) {
      log.info(`Putting the safety backup ${safety.backup_id} back`)
      await restoreDatabaseFrom(ctx, safety)
    }
    if (current) await checkout(ctx, current).then(() => runVersion(ctx, current)).catch((e) => log.error(`Could not restart ${current}: ${messageOf(e)}`))
    throw new OpsError('restore_failed', `Backup restoration failed; the safety backup was put back and ${current ?? 'nothing'} restarted`, { cause: error })
  }
}

async function requireHealthy(ctx: Context, target: string): Promise<void> {
  const failed = await healthGate(ctx)
  if (failed) throw new OpsError('health_failed', `${target} is running but not healthy after ${ctx.cfg.HEALTH_CHECK_TIMEOUT}s`)
  log.info('Health checks passed')
}

async function recordRollback(ctx: Context, state: DeployState, target: string, event: ReturnType<typeof newEvent>): Promise<void> {
  if (isDryRun()) return
  const image = `${requireImage(ctx.cfg)}:${target}`
  const sha = (await tryRun(gitResolve(ctx.cfg.APP_DIR, target))).stdout.trim()
  writeState(ctx.cfg.ARTIFACTS_FILE, {
    current: {
      artifact_id: target, git_commit_sha: sha, git_tag: /^v\d/.test(target) ? target : null, docker_image_uri: image,
      docker_image_digest: await imageDigest(image), deployed: true, deployed_at: isoSeconds(new Date()),
      rollback_from: state.current?.artifact_id ?? null, schema_revision: await schemaRevision(ctx.db),
    },
    previous: state.current ? { ...state.current, deployed: false } : null,
  })
  setEnvValue(ctx.cfg.envFile, 'APP_VERSION', target)
  record(ctx, completeEvent({ ...event, health_check_passed: true }, 'success', null))
  await notify(ctx.cfg, `Rolled back to ${target} on ${os.hostname()} (from ${state.current?.artifact_id ?? 'nothing'}).`)
}

function ageOf(time: string): string {
  const minutes = dayjs().diff(dayjs(time), 'minute')
  return minutes < 120 ? `${minutes} min` : minutes < 48 * 60 ? `${Math.round(minutes / 60)} h` : `${Math.round(minutes / 1440)} days`
}
