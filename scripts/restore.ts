// restore <file|id>: replace the live database with a backup, proven complete before the swap
// (contract: restore.sh). restore --drill [id]: the same proof on a scratch copy, live untouched.
import fs from 'node:fs'
import path from 'node:path'
import { BACKUP_ID, findBackup, lockBackups, readIndex, updateIndex, type BackupRecord } from '../lib/db/backup-index.ts'
import { downloadForDrill, localCopyOf, newestOf, trustedExplicitly } from '../lib/offsite/copies.ts'
import { flag, stringOption, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { drillToTime, parseTarget, restoreToTime } from '../lib/db/pitr-restore.ts'
import { pitrUnavailable } from '../lib/db/pitr.ts'
import { confirmDestructive } from '../lib/core/prompt.ts'
import { openContext, type Context } from '../lib/stack/context.ts'
import { requireFreeDisk } from '../lib/core/disk.ts'
import { OpsError, messageOf } from '../lib/core/errors.ts'
import { fileStamp, isoSeconds } from '../lib/core/format.ts'
import { log } from '../lib/core/log.ts'
import { recordDrill as publishDrill } from '../lib/core/metrics.ts'
import { isEntryPoint, runMain } from '../lib/core/main.ts'
import { startBotAgain, stopBotForSwap } from '../lib/swarm/service.ts'
import { usesSwarm } from '../lib/swarm/stack.ts'
import { checkRestoreAccess, checkSourceLooksIntact, dropDatabase, requireServerUp, restartAppServices, restoreScratchCopy, settleReplacedDatabase, swapScratchIn, type Source } from '../lib/db/restore.ts'
import { requireRoomForScratchCopy } from '../lib/db/scratch-room.ts'
import { releasedOnInterrupt, takeDeployLock, type Lock } from '../lib/core/lock.ts'
import { restoreNotice } from '../lib/core/notices.ts'
import { isDryRun } from '../lib/core/shell.ts'

const spec = {
  name: 'restore',
  summary: 'Restore the database from a backup file or a backup id in backup_index.json',
  usage: 'restore <backup-file|backup-id|latest> [--yes] [--dry-run]\n       restore --to-time "YYYY-MM-DD HH:MM:SS+00"|latest [--yes]\n       restore --drill [backup-id | --offsite | --to-time latest]',
  positionals: [{ name: 'backup-file|backup-id|latest', description: 'a .sql.gz path, an id such as toogoodtogo_20251228_030010, or latest (the newest, local or off-site)' }],
  maxPositionals: 1,
  options: {
    yes: { type: 'boolean', short: 'y', description: 'Do not ask for confirmation (required when there is no terminal)' },
    'dry-run': { type: 'boolean', short: 'n', description: 'Print the commands that would run; change nothing' },
    drill: { type: 'boolean', description: 'Restore the newest (or given) backup into a scratch database, verify, drop it; live untouched' },
    'to-time': { type: 'string', value: 'TIME', description: 'Point-in-time recovery (PITR_ENABLED=true): the cluster as it was at TIME (with its zone), or latest: everything archived' },
    'trust-unauthenticated': { type: 'boolean', description: 'With a backup id: accept its off-site copy without a MAC (made before copies were authenticated); never one whose MAC is wrong' },
    offsite: { type: 'boolean', description: 'With --drill: download the newest off-site copy (decrypt, verify) and drill that (the default for --drill without an id when off-site copies are on)' },
  },
  exitCodes: [
    [0, 'Restore successful (or the drill passed)'],
    [1, 'Restore failed; the live database is exactly as it was unless the log says otherwise'],
    [2, 'Backup file not found or corrupted, or its off-site copy cannot be decrypted with BACKUP_AGE_IDENTITY_FILE (nothing changed)'],
    [3, 'Database connection failed, or the bucket of an off-site copy cannot be reached (nothing changed)'],
  ],
  env: [
    ['APP_SERVICES', 'compose services stopped during the swap and restarted after (bot); empty for none'],
    ['KEY_TABLES', 'tables that must exist and are counted in the summary (default: the two largest)'],
    ['DB_MODE, DATABASE_URL', 'as for backup'],
    ['PITR_RECOVERY_TIMEOUT', 'seconds a --to-time recovery may replay WAL before it counts as failed (3600)'],
    ['OFFSITE_S3_*, BACKUP_AGE_IDENTITY_FILE', 'off-site copies: a backup missing locally (or failing its checksum) is downloaded from the bucket'],
  ],
  notes: [
    'Order: check the file (readable, gzip, recorded size), check the connection, confirm, restore into',
    'a fresh scratch database while verifying the file on the way in (sha256, gzip, completion trailer),',
    'prove every row arrived, stop APP_SERVICES, swap the scratch copy in by rename, restart',
    'APP_SERVICES and wait for them to be healthy. The previous database, renamed aside at the swap, is',
    'then dumped as the safety backup (gzip level 1, recorded in the index with its reason) and dropped:',
    'it holds every write up to the swap, and taking it does not keep the services down. Should it fail,',
    'the previous database is kept under its aside name and the log says so.',
    'With off-site copies on, a backup id whose file is missing or fails its recorded checksum is',
    'downloaded from the bucket (streamed, decrypted with BACKUP_AGE_IDENTITY_FILE, checked against the',
    'checksums recorded at upload) into BACKUP_DIR and indexed first; on a new droplet with an empty',
    'index, `restore latest` finds the newest backup in the bucket. --drill without an id then drills',
    'the newest off-site copy (downloaded into BACKUP_DIR and removed afterwards): the whole chain.',
    '--to-time (point-in-time recovery) replaces the whole cluster: confirm, stop APP_SERVICES, archive',
    'the WAL written so far, stop postgres, restore the newest base backup before TIME from repo1 (or',
    'the off-site repo2 when repo1 has none) beside the current data directory, which is kept aside,',
    'replay the archive to TIME, promote, verify (key tables exist and are counted), then remove the',
    'kept directory and start APP_SERVICES. Any failure before the verification puts the kept',
    'directory back as it was. --drill --to-time latest replays into a scratch volume, live untouched;',
    '--drill without an id (the weekly timer) does that too when PITR is on, after the dump drill.',
    'A restore (not a drill) holds the deploy lock: a second restore, a deploy or a rollback exits 1',
    'naming it. In compose mode the postgres volume must hold the scratch copy (df inside the',
    'container) or nothing starts; a query proves the server up before "Restore successful".',
  ],
  examples: ['restore --to-time "2026-12-02 10:31:00+00" --yes', 'restore --to-time latest', 'restore --drill --to-time latest', 'restore toogoodtogo_20251227_030010', 'restore /opt/backups/postgres/toogoodtogo_20251227_030010.sql.gz --yes', 'restore latest --yes', 'restore --drill', 'restore --drill --offsite'],
} satisfies CliSpec

// The CLI, when this file is the one node started; a test imports the command without running it.
if (isEntryPoint(import.meta.url)) await runMain(spec, { exitCodes: { not_found: 2, verify_failed: 2, connection: 3 }, failureLine: 'Restore failed', asDeployUser: true, failureNotice: restoreNotice }, restore)

export async function restore(cli: ParsedCli<typeof spec>): Promise<void> {
  const ctx = await openContext()
  const toTime = stringOption(cli, 'to-time')
  if (toTime !== undefined) return pointInTime(ctx, cli, toTime)
  if (flag(cli, 'drill')) return drill(ctx, cli.positionals[0], flag(cli, 'offsite'))
  if (flag(cli, 'offsite')) throw new OpsError('usage', '--offsite goes with --drill; restore <id> fetches an off-site copy by itself when the local one is missing')
  if (!cli.positionals[0]) throw new OpsError('usage', 'Missing the backup file or backup id to restore')
  log.info('Starting database restore')
  const lock = await takeDeployLock(ctx.cfg, `restore ${cli.positionals[0]}`)
  try {
    const source = await resolveSource(ctx, cli.positionals[0], flag(cli, 'trust-unauthenticated'))
    log.info(`Backup file: ${source.file}`)
    verifyIntegrity(source)
    await checkRestoreAccess(ctx.db, ctx.db.database)
    requireRoomForSafetyBackup(ctx)
    await requireRoomForScratchCopy(ctx, source)
    await confirmDestructive(`This replaces database "${ctx.db.database}" with ${path.basename(source.file)}${ctx.cfg.APP_SERVICES.length ? ` and restarts ${ctx.cfg.APP_SERVICES.join(', ')}` : ''}.`, flag(cli, 'yes'))
    const scratch = await restoreScratchCopy(ctx, source)
    const swarmReplicas = (await usesSwarm(ctx.cfg)) ? await stopBotForSwap(ctx) : null
    const previous = await swapScratchIn(ctx, scratch, swarmReplicas === null ? ctx.cfg.APP_SERVICES : [])
    try {
      if (swarmReplicas === null) await restartAppServices(ctx, 'The database was restored, but ')
      else await startBotAgain(ctx, swarmReplicas, 'The database was restored, but ')
    } finally {
      // Also when the services fail: the previous data is backed up before its database is dropped.
      await settleReplacedDatabase(ctx, previous, { reason: `safety backup: ${ctx.db.database} as it was before restoring ${path.basename(source.file)}` })
    }
    await requireServerUp(ctx)
  } finally {
    lock.release()
  }
  log.info('Restore successful')
}

async function pointInTime(ctx: Context, cli: ParsedCli, toTime: string): Promise<void> {
  if (cli.positionals[0] || flag(cli, 'offsite')) throw new OpsError('usage', '--to-time restores from the WAL archive: give no backup id or --offsite')
  const target = parseTarget(toTime)
  if (flag(cli, 'drill')) {
    await drillToTime(ctx, target)
    return
  }
  log.info('Starting point-in-time restore')
  const lock = await takeDeployLock(ctx.cfg, `restore --to-time ${toTime}`)
  try {
    const backups = await holdBackups(ctx, `restore --to-time ${toTime}`)
    try {
      await restoreToTime(ctx, target, flag(cli, 'yes'))
    } finally {
      backups.release()
    }
  } finally {
    lock.release()
  }
  log.info('Restore successful')
}

/**
 * The server is stopped or replaying WAL until a --to-time restore ends: a backup that starts
 * meanwhile waits for it (up to 15 minutes, then fails naming the restore), and one running now
 * finishes first. A dump restore does not hold it: its swap is one rename, so a backup sees the old
 * database or the new one (one dumping at that moment is ended and fails, saying so), and its
 * safety backup takes this lock itself.
 */
async function holdBackups(ctx: Context, command: string): Promise<Lock> {
  if (isDryRun()) return { release: () => undefined }
  fs.mkdirSync(ctx.cfg.BACKUP_DIR, { recursive: true, mode: 0o700 })
  return releasedOnInterrupt(await lockBackups(ctx.cfg.BACKUP_DIR, command))
}

/**
 * A backup id (a strict pattern: no path can sneak in) or `latest` is looked up in the index and,
 * with off-site copies on, in the bucket: a copy missing here or failing its checksum is downloaded
 * and verified first. Anything else is a path.
 */
async function resolveSource(ctx: Context, arg: string, trustUnauthenticated: boolean): Promise<Source> {
  if (!arg.includes('/') && !arg.endsWith('.gz')) {
    if (arg !== 'latest' && !BACKUP_ID.test(arg)) throw new OpsError('not_found', `"${arg}" is neither a backup id (like toogoodtogo_20251228_030010), latest, nor a file path`)
    if (arg === 'latest' && trustUnauthenticated) throw new OpsError('usage', '--trust-unauthenticated goes with a backup id, never with latest')
    const found = await localCopyOf(ctx.cfg, arg, { trustUnauthenticated })
    if (found) return found
    const where = `${ctx.cfg.BACKUP_DIR}/backup_index.json${ctx.cfg.offsite ? ` nor in bucket ${ctx.cfg.offsite.bucket}` : ''}`
    throw new OpsError('not_found', arg === 'latest' ? `There are no backups in ${where}` : `Backup ${arg} is not in ${where}`)
  }
  const file = path.resolve(arg)
  try {
    fs.accessSync(file, fs.constants.R_OK)
  } catch {
    throw new OpsError('not_found', `Backup file not found or not readable: ${file}`)
  }
  if (!fs.statSync(file).isFile()) throw new OpsError('not_found', `Not a file: ${file}`)
  const record = readIndex(ctx.cfg.BACKUP_DIR).backups.find((b) => path.resolve(b.file_path) === file) ?? null
  return { file, record }
}

function verifyIntegrity(source: Source): void {
  log.info('Verifying backup integrity')
  checkSourceLooksIntact(source)
}

/** The safety backup comes after the swap; a disk too full for it stops the restore before, not after. */
function requireRoomForSafetyBackup(ctx: Context): void {
  if (isDryRun() || !fs.existsSync(ctx.cfg.BACKUP_DIR)) return
  requireFreeDisk(ctx.cfg.BACKUP_DIR, ctx.cfg.MIN_FREE_DISK_MB)
}

// ---- drill -------------------------------------------------------------------------------------

// The weekly timer runs `restore --drill` (a unit cannot branch): with off-site copies on, a drill
// without an id drills the newest off-site copy, so the whole chain (bucket, key, decryption,
// restore) is proven, not only the local file.
async function drill(ctx: Context, id: string | undefined, offsite: boolean): Promise<void> {
  if (offsite && id) throw new OpsError('usage', '--drill --offsite drills the newest off-site copy; give no backup id')
  if (offsite && !ctx.cfg.offsite) throw new OpsError('config', '--offsite: off-site copies are off (OFFSITE_S3_BUCKET is empty)')
  if (ctx.cfg.offsite && !id) await drillOffsite(ctx, ctx.cfg.offsite)
  else await drillLocal(ctx, id)
  // The weekly timer's drill (no id) proves every way back: the WAL archive too, when PITR is on.
  if (!id && !pitrUnavailable(ctx.cfg)) await drillToTime(ctx, 'latest')
}

async function drillLocal(ctx: Context, id: string | undefined): Promise<void> {
  const index = readIndex(ctx.cfg.BACKUP_DIR)
  const record = id ? findBackup(index, id) : newestOf(ctx.cfg, index.backups, { safetyBackups: true })
  if (!record) throw new OpsError('not_found', id ? `Backup ${id} is not in the index` : 'There are no backups to drill')
  if (id) trustedExplicitly(ctx.cfg, record)
  log.info(`Starting restore drill of ${record.backup_id}`)
  await drillOnce(ctx, record.backup_id, async () => ({ file: record.file_path, record }), 'restored into a scratch database, every row accounted for')
}

async function drillOffsite(ctx: Context, settings: NonNullable<Context['cfg']['offsite']>): Promise<void> {
  log.info('Starting restore drill of the newest off-site copy')
  // Inside BACKUP_DIR: the disk the backups are sized for, and owner-only like them.
  const dir = path.join(ctx.cfg.BACKUP_DIR, `.drill-${fileStamp()}`)
  if (!isDryRun()) fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  try {
    await drillOnce(ctx, null, () => downloadForDrill(ctx.cfg, settings, dir), 'downloaded from the bucket, decrypted, restored into a scratch database, every row accounted for')
  } finally {
    if (!isDryRun()) fs.rmSync(dir, { recursive: true, force: true })
  }
}

/** One drill, its outcome recorded as `last_drill` on the backup (when the index holds it). */
async function drillOnce(ctx: Context, knownId: string | null, fetch: () => Promise<{ file: string; record: BackupRecord }>, passed: string): Promise<void> {
  let id = knownId
  let outcome: 'passed' | 'failed' = 'failed'
  let detail = ''
  try {
    const source = await fetch()
    id = source.record.backup_id
    if (!knownId) log.info(`Drilling ${id}`)
    verifyIntegrity(source)
    await checkRestoreAccess(ctx.db, null)
    await requireRoomForScratchCopy(ctx, source)
    const scratch = await restoreScratchCopy(ctx, source)
    await dropDatabase(ctx.db, scratch)
    outcome = 'passed'
    detail = passed
  } catch (error) {
    detail = messageOf(error)
    throw error
  } finally {
    if (!isDryRun() && id) await recordDrill(ctx, id, outcome, detail)
  }
  log.info(`Restore drill passed: ${id}`)
}

async function recordDrill(ctx: Context, id: string, outcome: 'passed' | 'failed', detail: string): Promise<void> {
  publishDrill(ctx.cfg, { finishedAt: new Date(), passed: outcome === 'passed' })
  await updateIndex(ctx.cfg.BACKUP_DIR, (index) => {
    const record = findBackup(index, id)
    if (record) record.last_drill = { at: isoSeconds(), outcome, detail }
  })
}
