// rollback [target-version]: back to an earlier release, the database kept when its schema fits
// the target and restored from the target's pre-deployment backup when it is ahead
// (contract: rollback.sh).
import { flag, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { openContext, type Context } from '../lib/stack/context.ts'
import { takeDeployLock } from '../lib/core/lock.ts'
import { deployedVersions, lastGoodBefore, readEvents, readState } from '../lib/release/deploy-state.ts'
import { OpsError } from '../lib/core/errors.ts'
import { log } from '../lib/core/log.ts'
import { isEntryPoint, runMain } from '../lib/core/main.ts'
import { rollbackNotice } from '../lib/core/notices.ts'
import { endWatch } from '../lib/release/watch.ts'
import { fromRecordedRelease, rollBack } from '../lib/release/rollback.ts'
import { isDryRun } from '../lib/core/shell.ts'
import { rollBackOnSwarm } from '../lib/swarm/rollback.ts'
import { usesSwarm } from '../lib/swarm/stack.ts'

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

export interface RollbackOptions {
  target: string | undefined
  yes: boolean
  restoreDb: boolean
  keepData: boolean
  stopFirst: boolean
}

// The CLI, when this file is the one node started; a test imports the command without running it.
if (isEntryPoint(import.meta.url)) {
  await runMain(spec, { exitCodes: { target_not_found: 2, restore_failed: 3 }, asDeployUser: true, failureNotice: rollbackNotice }, async (cli) => {
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

/** Picks the target; the contract's steps are the one rollback's (lib/release/rollback.ts). */
export async function rollback(ctx: Context, opts: RollbackOptions): Promise<void> {
  await endWatch(ctx.cfg, `a rollback${opts.target ? ` to ${opts.target}` : ''}`)
  const state = readState(ctx.cfg.ARTIFACTS_FILE, ctx.cfg.legacyArtifactsFile)
  const current = state.current?.artifact_id ?? null
  const target = determineTarget(ctx, opts.target, current)
  log.info(`Starting rollback from ${current ?? 'nothing'} to ${target}`)
  const rollBackTo = (await usesSwarm(ctx.cfg)) ? rollBackOnSwarm : rollBack
  await rollBackTo(ctx, fromRecordedRelease(ctx, {
    state,
    target,
    triggeredBy: ctx.cfg.TRIGGERED_BY,
    rollbackOf: null,
    undoing: `rollback.sh from ${current ?? 'nothing'}`,
    context: null,
    db: { touched: opts.restoreDb, keepData: opts.keepData },
    yes: opts.yes,
    stopFirst: opts.stopFirst,
    message: `Rolled back to ${target} (from ${current ?? 'nothing'})`,
  }))
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
