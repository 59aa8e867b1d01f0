// backup [type]: a verified, compressed database backup, indexed and rotated (contract: backup.sh),
// and its encrypted off-site copy when OFFSITE_S3_BUCKET is set.
import os from 'node:os'
import { applyRetention, createBackup, markFailed, markVerified, verifyBackupFile } from '../lib/db/backup.ts'
import { BACKUP_TYPES, findBackup, foreignFileProblem, readIndex, type BackupRecord, type BackupType } from '../lib/db/backup-index.ts'
import { listingTable, mergeListing, remoteBackupsOrReason, syncOffsite } from '../lib/offsite/copies.ts'
import { flag, stringOption, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { openContext, type Context } from '../lib/stack/context.ts'
import { OpsError, messageOf } from '../lib/core/errors.ts'
import { log } from '../lib/core/log.ts'
import { isEntryPoint, runMain } from '../lib/core/main.ts'
import { notify } from '../lib/core/notify.ts'
import { backupNotice } from '../lib/core/notices.ts'
import { applyRemoteRetention } from '../lib/offsite/retention.ts'
import { describePhysical, pitrRepos, pitrUnavailable, readPitrState, repoContents, takePhysicalBackups, type PhysicalBackup, type PhysicalRun } from '../lib/db/pitr.ts'
import { runningArtifactId } from '../lib/release/deploy-state.ts'

const spec = {
  name: 'backup',
  summary: 'Create a verified, compressed PostgreSQL backup and record it in backup_index.json',
  usage: 'backup [scheduled|pre_deployment|manual] [--json] [--dry-run]\n       backup --physical [full|diff]\n       backup --verify [BACKUP_ID|all]\n       backup --offsite-sync [--dry-run]\n       backup --list [--json]',
  positionals: [
    { name: 'backup-type', description: 'scheduled, pre_deployment or manual (default: manual)' },
    { name: 'BACKUP_ID|all', description: 'with --verify: the backup to re-check (default: all)' },
    { name: 'full|diff', description: 'with --physical: the base backup type (default: full when the repository holds none from the last 7 days, diff otherwise)' },
  ],
  maxPositionals: 1,
  options: {
    json: { type: 'boolean', description: 'Print the new index record as JSON on stdout (log lines go to stderr)' },
    'dry-run': { type: 'boolean', short: 'n', description: 'Print the commands that would run; change nothing' },
    artifact: { type: 'string', value: 'VERSION', description: 'Application version recorded with the backup (artifact_id)' },
    verify: { type: 'boolean', description: 'Re-verify existing backups (gzip, completion trailer, checksum, row counts)' },
    'offsite-sync': { type: 'boolean', description: 'Copy off-site every indexed backup without a verified off-site copy, then apply off-site retention' },
    physical: { type: 'boolean', description: 'A pgBackRest base backup for point-in-time recovery (PITR_ENABLED=true) into repo1 and, with a bucket, repo2' },
    list: { type: 'boolean', description: 'List every backup, local and off-site: id, type, size, age, where, verified, last drill (--json: as JSON)' },
  },
  exitCodes: [
    [0, 'Backup successful (or every re-verified backup is intact)'],
    [1, 'Backup failed (pg_dump error, bad arguments or configuration, corrupt index)'],
    [2, 'Verification failed (corrupted backup; it is not indexed)'],
    [3, 'Insufficient disk space (MIN_FREE_DISK_MB), or the disk filled up during the dump'],
    [4, 'Backup verified locally, off-site copy failed (the log names the cause; --offsite-sync retries)'],
  ],
  env: [
    ['BACKUP_DIR', 'where backups and backup_index.json live (/opt/backups/postgres)'],
    ['DB_MODE', 'compose (pg_dump inside the postgres service) or url (host pg_dump, DATABASE_URL)'],
    ['MIN_FREE_DISK_MB', 'free space required before starting (2048)'],
    ['BACKUP_RETENTION_COUNT', 'newest backups always kept (7)'],
    ['BACKUP_RETENTION_DAYS', 'sets retention_until; older backups beyond the count are deleted (7)'],
    ['LOG_FILE', 'log file (/var/log/toogoodtogo/deployment.log)'],
    ['OFFSITE_S3_BUCKET', 'set (with OFFSITE_S3_ENDPOINT, keys and BACKUP_AGE_RECIPIENT): every backup is also copied off-site, age-encrypted'],
    ['OFFSITE_RETENTION_COUNT / _DAYS', 'off-site copies kept: the newest 14, and any younger than 30 days'],
    ['PITR_ENABLED', 'true: a scheduled run also takes a base backup (full weekly, differential daily); README "Point-in-time recovery"'],
    ['PITR_RETENTION_FULL', 'full base backups pgBackRest keeps per repository, with the WAL they need (2)'],
  ],
  notes: [
    'Retention deletes a backup only when it is both outside the newest BACKUP_RETENTION_COUNT and past',
    'its retention_until; the newest verified backup is never deleted. Off-site, the same rule with',
    'OFFSITE_RETENTION_COUNT / _DAYS. A scheduled run first copies off-site the backups an earlier run',
    'could not (as --offsite-sync does). An off-site failure never costs the local backup: it is',
    'verified and indexed, the failure is recorded in the index and notified, and the exit code is 4.',
    'With PITR_ENABLED=true a scheduled run then takes a pgBackRest base backup into each repository;',
    'its failure is notified and is exit 4 too (the dump is still verified and indexed).',
  ],
  examples: ['backup', 'backup scheduled', 'backup --json', 'backup --verify all', 'backup --offsite-sync', 'backup --list', 'DB_MODE=url DATABASE_URL=postgresql://app@db:5432/app backup --dry-run'],
} satisfies CliSpec

/** exit 4: the backup itself is fine; its off-site copy (or the off-site bookkeeping) failed */
const OFFSITE_FAILED = 'Backup verified locally, off-site copy failed'

// The CLI, when this file is the one node started; a test imports the command without running it.
if (isEntryPoint(import.meta.url)) await runMain(spec, {
  exitCodes: { disk_space: 3, verify_failed: 2, backup_failed: 4 },
  failureLine: (error) => (error instanceof OpsError && error.kind === 'backup_failed' ? OFFSITE_FAILED : 'Backup failed'),
  jsonFlag: 'json',
  asDeployUser: true,
  failureNotice: backupNotice,
}, backup)

export async function backup(cli: ParsedCli<typeof spec>): Promise<void> {
  const ctx = await openContext()
  if (flag(cli, 'verify')) return reverify(ctx, cli.positionals[0] ?? 'all')
  if (flag(cli, 'list')) return list(ctx, flag(cli, 'json'))
  if (flag(cli, 'offsite-sync')) return offsiteSync(ctx)
  if (flag(cli, 'physical')) return physical(ctx, cli.positionals[0])
  const type = backupType(cli)
  const failures: string[] = []
  // The catch-up first: a copy the last run could not make goes before tonight's.
  if (type === 'scheduled' && ctx.cfg.offsite) failures.push(...(await syncOffsite(ctx.cfg, ctx.cfg.offsite)).failed.map(describeFailure))
  log.info(`Starting database backup (type: ${type})`)
  const record = await createBackup(ctx.cfg, ctx.db, { type, artifactId: stringOption(cli, 'artifact') ?? runningArtifactId(ctx.cfg.ARTIFACTS_FILE, ctx.cfg.legacyArtifactsFile), reason: null })
  if (record.offsite_error) failures.push(describeFailure(record))
  await cleanUpOldBackups(ctx)
  failures.push(...(await cleanUpOffsite(ctx)))
  if (type === 'scheduled' && !pitrUnavailable(ctx.cfg)) failures.push(...(await scheduledPhysical(ctx)))
  log.info(`Backup complete: ${record.file_path}`)
  if (flag(cli, 'json')) process.stdout.write(JSON.stringify(record, null, 2) + '\n')
  offsiteOutcome(failures)
}

function describeFailure(record: BackupRecord): string {
  return `Off-site copy of ${record.backup_id} failed: ${record.offsite_error?.message ?? 'unknown error'}`
}

/** Each failure on its own ERROR line (it names the cause, and the variable for credentials): exit 4. */
function offsiteOutcome(failures: string[]): void {
  if (!failures.length) return
  for (const failure of failures) log.error(failure)
  throw new OpsError('backup_failed', `${failures.length} off-site or physical backup operation${failures.length === 1 ? '' : 's'} failed; the local backups are verified and indexed`)
}

// ---- --physical (point-in-time recovery) -------------------------------------------------------

async function physical(ctx: Context, requested: string | undefined): Promise<void> {
  const type = requested ?? 'auto'
  if (type !== 'full' && type !== 'diff' && type !== 'auto') throw new OpsError('usage', `Unknown physical backup type "${type}" (expected full or diff)`)
  await takePhysicalBackups(ctx, type)
  log.info('Physical backup complete')
}

/** After the nightly dump: a base backup too (full weekly, differential otherwise); its failure is exit 4, the dump stands. */
async function scheduledPhysical(ctx: Context): Promise<string[]> {
  try {
    await takePhysicalBackups(ctx, 'auto')
    return []
  } catch (error) {
    if (!(error instanceof OpsError && error.alreadyNotified)) await notify(ctx.cfg, `Physical backup failed on ${os.hostname()}: ${messageOf(error)}`)
    return [messageOf(error)]
  }
}

async function offsiteSync(ctx: Context): Promise<void> {
  const settings = ctx.cfg.offsite
  if (!settings) throw new OpsError('config', 'Off-site copies are off: set OFFSITE_S3_BUCKET (and the other OFFSITE_* and BACKUP_AGE_RECIPIENT) in .env.production')
  const { copied, failed } = await syncOffsite(ctx.cfg, settings)
  const failures = failed.map(describeFailure)
  failures.push(...(await cleanUpOffsite(ctx)))
  log.info(`Off-site sync: ${copied.length} copied, ${failed.length} failed`)
  offsiteOutcome(failures)
}

/**
 * Remote retention after local retention. A listing or delete that fails deletes nothing more and
 * is reported (exit 4): a bucket that silently stops shrinking fills up, and then copies fail.
 */
async function cleanUpOffsite(ctx: Context): Promise<string[]> {
  const settings = ctx.cfg.offsite
  if (!settings) return []
  log.info('Cleaning up old off-site copies')
  try {
    const result = await applyRemoteRetention(settings)
    for (const warning of result.warnings) log.warn(warning)
    const leftovers = result.removedLeftovers.length + result.abortedUploads.length
    log.info(`Deleted ${result.deleted.length} expired off-site cop${result.deleted.length === 1 ? 'y' : 'ies'}${leftovers ? ` and ${leftovers} leftover${leftovers === 1 ? '' : 's'} of interrupted uploads` : ''}; ${result.kept.length} kept`)
    return []
  } catch (error) {
    await notify(ctx.cfg, `Off-site retention failed: ${messageOf(error)}`)
    return [messageOf(error)]
  }
}

// ---- --list ------------------------------------------------------------------------------------

async function list(ctx: Context, json: boolean): Promise<void> {
  const local = readIndex(ctx.cfg.BACKUP_DIR).backups
  let remote = null
  let unlisted: string | null = null
  if (ctx.cfg.offsite) {
    const found = await remoteBackupsOrReason(ctx.cfg.offsite)
    if ('backups' in found) remote = found.backups
    else unlisted = found.failure
  }
  const rows = mergeListing(local, remote)
  const physicalRows = pitrUnavailable(ctx.cfg) ? null : await physicalListing(ctx)
  if (json) process.stdout.write(JSON.stringify(physicalRows ? { backups: rows, physical: physicalRows } : rows, null, 2) + '\n')
  else {
    process.stdout.write(listingTable(rows, new Date()))
    if (physicalRows) process.stdout.write(physicalTable(physicalRows))
  }
  if (!ctx.cfg.offsite) log.info('Off-site copies are off (OFFSITE_S3_BUCKET is empty): local backups only')
  // The local half is still worth printing; that the bucket could not be read must not pass as "0 off-site".
  if (unlisted) offsiteOutcome([`Off-site copies could not be listed: ${unlisted}`])
}

interface PhysicalListing {
  backups: PhysicalBackup[]
  /** each repository's archive: the WAL range it can replay, and how its last base backup run ended */
  repos: { repo: number; wal_min: string | null; wal_max: string | null; last_run: PhysicalRun | null }[]
  status: string
}

async function physicalListing(ctx: Context): Promise<PhysicalListing> {
  const contents = await repoContents(ctx)
  const runs = readPitrState(ctx.cfg).last_runs
  return {
    backups: contents.backups,
    status: contents.status,
    repos: pitrRepos(ctx.cfg).map((repo) => {
      const archive = contents.archive.find((a) => a.repo === repo)
      return { repo, wal_min: archive?.min ?? null, wal_max: archive?.max ?? null, last_run: runs.find((r) => r.repo === repo) ?? null }
    }),
  }
}

function physicalTable(listing: PhysicalListing): string {
  const lines = ['', `Physical base backups (pgBackRest, point-in-time recovery; stanza: ${listing.status}):`]
  if (!listing.backups.length) lines.push('  none yet: backup --physical takes the first')
  for (const b of listing.backups) lines.push(`  ${describePhysical(b)}`)
  for (const r of listing.repos) {
    const run = r.last_run ? `last run ${r.last_run.at} ${r.last_run.outcome}${r.last_run.outcome === 'failed' ? `: ${r.last_run.detail}` : ''}` : 'no run recorded'
    lines.push(`  repo${r.repo}: WAL ${r.wal_min ?? '-'} .. ${r.wal_max ?? '-'}; ${run}`)
  }
  return lines.join('\n') + '\n'
}

function backupType(cli: ParsedCli): BackupType {
  const type = cli.positionals[0] ?? 'manual'
  if (!(BACKUP_TYPES as readonly string[]).includes(type)) throw new OpsError('usage', `Unknown backup type "${type}" (expected ${BACKUP_TYPES.join(', ')})`)
  return type as BackupType
}

async function cleanUpOldBackups(ctx: Context): Promise<void> {
  log.info('Cleaning up old backups')
  const { deleted } = await applyRetention(ctx.cfg)
  log.info(`Deleted ${deleted.length} expired backup${deleted.length === 1 ? '' : 's'}`)
}

async function reverify(ctx: Context, which: string): Promise<void> {
  const index = readIndex(ctx.cfg.BACKUP_DIR)
  const targets: BackupRecord[] = which === 'all' ? index.backups : [findBackup(index, which) ?? notFound(which)]
  log.info(`Verifying ${targets.length} backup${targets.length === 1 ? '' : 's'}`)
  const failures: string[] = []
  for (const record of targets) {
    try {
      const foreign = foreignFileProblem(ctx.cfg.BACKUP_DIR, record)
      if (foreign) throw new OpsError('verify_failed', `not trusted: ${foreign}; the file was not read`)
      await verifyBackupFile(record.file_path, { sha256: record.sha256, rowCounts: record.row_counts })
      await markVerified(ctx.cfg, record.backup_id, new Date())
      log.info(`${record.backup_id}: verified`)
    } catch (error) {
      await markFailed(ctx.cfg, record.backup_id)
      log.error(`${record.backup_id}: ${messageOf(error)}`)
      failures.push(record.backup_id)
    }
  }
  if (failures.length) throw new OpsError('verify_failed', `Verification failed for ${failures.join(', ')}`)
  log.info('Verification successful')
}

function notFound(id: string): never {
  throw new OpsError('usage', `No backup "${id}" in the index`)
}
