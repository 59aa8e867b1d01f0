import type { BackupRecord } from '../db/backup-index.ts'
import { findBackup, readIndex } from '../db/backup-index.ts'
import type { Context } from '../stack/context.ts'
import type { ErrorKind } from '../core/errors.ts'
import { completeEvent, newEvent, type DeployEvent, type DeployState } from './deploy-state.ts'
import { record } from './release.ts'

// What scripts/deploy.ts's steps share and that is not a step: the run's state (its Attempt), the
// stages its one failure path tells apart, and the reading of a failed command's output.

/** What one deploy knows as it goes: the version it replaces, its backup, its audit event. */
export interface Attempt {
  ctx: Context
  tag: string
  stopFirst: boolean
  state: DeployState
  previous: string | null
  backup: BackupRecord | null
  event: DeployEvent
}

export function begin(ctx: Context, state: DeployState, opts: { tag: string; stopFirst: boolean }): Attempt {
  const previous = state.current?.artifact_id ?? null
  return { ctx, tag: opts.tag, stopFirst: opts.stopFirst, state, previous, backup: null, event: record(ctx, newEvent('deploy', opts.tag, previous, ctx.cfg.TRIGGERED_BY)) }
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
export function describeStage(stage: Stage): { headline: string; kind: ErrorKind } {
  switch (stage) {
    case 'checkout': return { headline: 'Checkout failed, the running version is untouched', kind: 'command_failed' }
    case 'pull': return { headline: 'Pull failed, the running version is untouched', kind: 'command_failed' }
    case 'migration': return { headline: 'Migration failed', kind: 'migration_failed' }
    case 'switch': return { headline: 'Starting the new version failed', kind: 'command_failed' }
    case 'health': return { headline: 'Health checks failed', kind: 'health_failed' }
  }
}

/** The backup as the index has it now (verified since the run began?), else as the run knew it. */
export function fresh(ctx: Context, backup: BackupRecord): BackupRecord {
  return findBackup(readIndex(ctx.cfg.BACKUP_DIR), backup.backup_id) ?? backup
}

/** A pre-flight check's problem: `message`, or the last line of the command's stderr. */
export function checkFailure(result: { exitCode: number | null; stderr: string }, message?: string): string | null {
  return result.exitCode === 0 ? null : (message ?? (result.stderr.trim().split('\n').pop() || `exit ${result.exitCode}`))
}

/** The line of a migration tool's output that says what broke, not the trailing links and notes. */
export function migrationFailureReason(output: string): string | null {
  const lines = output.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('(Background on this error'))
  return [...lines].reverse().find((l) => /\b\w*(Error|Exception)\b|ERROR:|error:/.test(l)) ?? lines.at(-1) ?? null
}
