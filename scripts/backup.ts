// backup [type]: a verified, compressed database backup, indexed and rotated (contract: backup.sh).
import { applyRetention, createBackup, markFailed, markVerified, verifyBackupFile } from '../lib/db/backup.ts'
import { BACKUP_TYPES, findBackup, readIndex, type BackupRecord, type BackupType } from '../lib/db/backup-index.ts'
import { flag, stringOption, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { openContext, type Context } from '../lib/core/config.ts'
import { OpsError, messageOf } from '../lib/core/errors.ts'
import { log } from '../lib/core/log.ts'
import { runMain } from '../lib/core/main.ts'

const spec: CliSpec = {
  name: 'backup',
  summary: 'Create a verified, compressed PostgreSQL backup and record it in backup_index.json',
  usage: 'backup [scheduled|pre_deployment|manual] [--json] [--dry-run]\n       backup --verify [BACKUP_ID|all]',
  positionals: [
    { name: 'backup-type', description: 'scheduled, pre_deployment or manual (default: manual)' },
    { name: 'BACKUP_ID|all', description: 'with --verify: the backup to re-check (default: all)' },
  ],
  maxPositionals: 1,
  options: {
    json: { type: 'boolean', description: 'Print the new index record as JSON on stdout (log lines go to stderr)' },
    'dry-run': { type: 'boolean', short: 'n', description: 'Print the commands that would run; change nothing' },
    artifact: { type: 'string', value: 'VERSION', description: 'Application version recorded with the backup (artifact_id)' },
    verify: { type: 'boolean', description: 'Re-verify existing backups (gzip, completion trailer, checksum, row counts)' },
  },
  exitCodes: [
    [0, 'Backup successful (or every re-verified backup is intact)'],
    [1, 'Backup failed (pg_dump error, bad arguments or configuration, corrupt index)'],
    [2, 'Verification failed (corrupted backup; it is not indexed)'],
    [3, 'Insufficient disk space (MIN_FREE_DISK_MB), or the disk filled up during the dump'],
  ],
  env: [
    ['BACKUP_DIR', 'where backups and backup_index.json live (/opt/backups/postgres)'],
    ['DB_MODE', 'compose (pg_dump inside the postgres service) or url (host pg_dump, DATABASE_URL)'],
    ['MIN_FREE_DISK_MB', 'free space required before starting (2048)'],
    ['BACKUP_RETENTION_COUNT', 'newest backups always kept (7)'],
    ['BACKUP_RETENTION_DAYS', 'sets retention_until; older backups beyond the count are deleted (7)'],
    ['LOG_FILE', 'log file (/var/log/toogoodtogo/deployment.log)'],
  ],
  notes: [
    'Retention deletes a backup only when it is both outside the newest BACKUP_RETENTION_COUNT and past',
    'its retention_until; the newest verified backup is never deleted.',
  ],
  examples: ['backup', 'backup scheduled', 'backup --json', 'backup --verify all', 'DB_MODE=url DATABASE_URL=postgresql://app@db:5432/app backup --dry-run'],
}

await runMain(spec, { exitCodes: { disk_space: 3, verify_failed: 2 }, failureLine: 'Backup failed', jsonFlag: 'json', asDeployUser: true }, async (cli) => {
  const ctx = await openContext()
  if (flag(cli, 'verify')) return reverify(ctx, cli.positionals[0] ?? 'all')
  const type = backupType(cli)
  log.info(`Starting database backup (type: ${type})`)
  const record = await createBackup(ctx.cfg, ctx.db, { type, artifactId: stringOption(cli, 'artifact') ?? null, reason: null })
  await cleanUpOldBackups(ctx)
  log.info(`Backup complete: ${record.file_path}`)
  if (flag(cli, 'json')) process.stdout.write(JSON.stringify(record, null, 2) + '\n')
})

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
