import path from 'node:path'
import type { BackupRecord } from './backup-index.ts'
import type { Context } from './context.ts'
import { exportRowsSince } from './data-export.ts'
import { appendEvent, type DeployEvent } from './deploy-state.ts'
import { checkHealth, SERVICES, waitUntilHealthy, type HealthReport } from './health.ts'
import { log } from './log.ts'
import { gitCheckout, switchTo } from './release.ts'
import { restoreScratchCopy, swapScratchIn } from './restore-db.ts'
import { isDryRun, run } from './runner.ts'

// Steps deploy.ts and rollback.ts both take, each logging the contract's lines.

/** The health gate, through health-check's own code; logs each unhealthy service. */
export async function healthGate(ctx: Context): Promise<HealthReport | null> {
  if (isDryRun()) return null
  const { report, waitedOut } = await waitUntilHealthy(ctx, SERVICES, ctx.cfg.HEALTH_CHECK_TIMEOUT * 1000)
  if (!waitedOut) return null
  for (const [name, h] of Object.entries(report.services)) if (h!.status === 'unhealthy' || h!.status === 'degraded') log.error(`${name}: ${h!.status} (${h!.detail})`)
  return report
}

export async function isHealthyNow(ctx: Context): Promise<boolean> {
  return (await checkHealth(ctx, SERVICES)).overall_status === 'healthy'
}

export async function checkout(ctx: Context, tag: string): Promise<void> {
  await run(gitCheckout(ctx.cfg.APP_DIR, tag))
}

/** Stops the bot, puts the database back to `backup` (proven complete first), leaves the bot stopped. */
export async function restoreDatabaseFrom(ctx: Context, backup: BackupRecord): Promise<void> {
  const scratch = await restoreScratchCopy(ctx, { file: backup.file_path, record: backup })
  await swapScratchIn(ctx, scratch, ['bot'])
}

/** CSV of the rows written since `backup`, into BACKUP_DIR/exports/<event>: nothing lost silently. */
export async function exportWrittenSince(ctx: Context, backup: BackupRecord, eventId: string): Promise<void> {
  const dir = path.join(ctx.cfg.BACKUP_DIR, 'exports', eventId)
  const counts = await exportRowsSince(ctx.db, backup.created_at, dir)
  if (Object.keys(counts).length === 0) log.info(`No rows written since the backup ${backup.backup_id}`)
}

/** Runs `tag`; returns the measured downtime in seconds (null when not measurable). */
export async function runVersion(ctx: Context, tag: string): Promise<number | null> {
  const downtime = await switchTo(ctx.cfg, ctx.compose!, tag)
  return isDryRun() ? null : downtime
}

export function record(ctx: Context, event: DeployEvent): DeployEvent {
  appendEvent(ctx.cfg.AUDIT_LOG, event)
  return event
}
