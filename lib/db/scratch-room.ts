import { dataDirectoryFree, psql, quoteLiteral } from '../commands/postgres.ts'
import { requireCompose, type Context } from '../stack/context.ts'
import { parseDfAvailable, requireRoomForCopy, uncompressedEstimate } from '../core/disk.ts'
import { formatBytes } from '../core/format.ts'
import { log } from '../core/log.ts'
import { isDryRun } from '../core/shell.ts'
import type { PhysicalBackup } from './pitr.ts'
import type { Source } from './restore.ts'

/**
 * Before a restore or a drill writes its scratch copy: the postgres volume has room for it and
 * MIN_FREE_DISK_MB besides, measured where the server writes (df inside the postgres container).
 * In url mode the server's disk cannot be seen from here, and its operator sizes it.
 */
export async function requireRoomForScratchCopy(ctx: Context, source: Source): Promise<void> {
  if (isDryRun()) return
  if (ctx.db.mode !== 'compose') {
    log.debug('DB_MODE=url: the database server\'s free disk space is not checked before the scratch copy')
    return
  }
  const live = (await psql(ctx.db, ctx.db.maintenanceDb, `SELECT COALESCE(sum(pg_database_size(datname)), 0) FROM pg_database WHERE datname = ${quoteLiteral(ctx.db.database)}`, { read: true })).stdout
  // The copy's size is not known before it is made: its rows take about the dump's text, its
  // indexes about what the live database's do. Both are counted, erring towards refusing.
  const room = {
    availableBytes: parseDfAvailable((await dataDirectoryFree(ctx.db.compose)).stdout),
    parts: { 'the live database': Number(live.trim()) || 0, 'the backup uncompressed': uncompressedEstimate(source.file) },
    marginMb: ctx.cfg.MIN_FREE_DISK_MB,
  }
  const required = requireRoomForCopy(room, 'on the postgres volume for the scratch copy')
  log.info(`Database volume: ${formatBytes(room.availableBytes)} available, ${formatBytes(required)} required for the scratch copy`)
}

/**
 * restore --to-time restores the base backup beside the current data directory, in the same
 * volume: the largest base backup it may choose and MIN_FREE_DISK_MB must fit. A postgres that is
 * not running cannot be asked (a disaster); the restore goes on, and says so.
 */
export async function requireRoomForRestoredCluster(ctx: Context, backups: PhysicalBackup[]): Promise<void> {
  if (isDryRun()) return
  const df = await dataDirectoryFree(requireCompose(ctx), { nothrow: true })
  if (df.exitCode !== 0) {
    log.warn(`Cannot measure the free space of the postgres volume (${df.stderr.trim().split('\n').pop() || `exit ${df.exitCode}`}); restoring without that check`)
    return
  }
  const room = { availableBytes: parseDfAvailable(df.stdout), parts: { 'the base backup': Math.max(0, ...backups.map((b) => b.sizeBytes)) }, marginMb: ctx.cfg.MIN_FREE_DISK_MB }
  const required = requireRoomForCopy(room, 'on the postgres volume for the restored data directory')
  log.info(`Database volume: ${formatBytes(room.availableBytes)} available, ${formatBytes(required)} required for the restored data directory`)
}
