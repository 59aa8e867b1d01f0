// restore <file|id>: replace the live database with a backup, proven complete before the swap
// (contract: restore.sh). restore --drill [id]: the same proof on a scratch copy, live untouched.
import fs from 'node:fs'
import path from 'node:path'
import { createBackup, verifyBackupFile } from '../lib/backup.ts'
import { BACKUP_ID, findBackup, readIndex, updateIndex } from '../lib/backup-index.ts'
import { flag, type CliSpec } from '../lib/cli.ts'
import { composeStart } from '../lib/compose.ts'
import { confirmDestructive } from '../lib/confirm.ts'
import { openContext, type Context } from '../lib/context.ts'
import { OpsError, messageOf } from '../lib/errors.ts'
import { SERVICES, waitUntilHealthy } from '../lib/health.ts'
import { isoSeconds } from '../lib/format.ts'
import { log } from '../lib/log.ts'
import { runMain } from '../lib/main.ts'
import { checkConnection, checkRestorePrivileges, databaseExists, dropDatabase, restoreScratchCopy, swapScratchIn, type Source } from '../lib/restore-db.ts'
import { isDryRun, run } from '../lib/runner.ts'

const spec: CliSpec = {
  name: 'restore',
  summary: 'Restore the database from a backup file or a backup id in backup_index.json',
  usage: 'restore <backup-file|backup-id> [--yes] [--dry-run]\n       restore --drill [backup-id]',
  positionals: [{ name: 'backup-file|backup-id', description: 'a .sql.gz path, or an id such as toogoodtogo_20251228_030010' }],
  maxPositionals: 1,
  options: {
    yes: { type: 'boolean', short: 'y', description: 'Do not ask for confirmation (required when there is no terminal)' },
    'dry-run': { type: 'boolean', short: 'n', description: 'Print the commands that would run; change nothing' },
    drill: { type: 'boolean', description: 'Restore the newest (or given) backup into a scratch database, verify, drop it; live untouched' },
  },
  exitCodes: [
    [0, 'Restore successful (or the drill passed)'],
    [1, 'Restore failed; the live database is exactly as it was unless the log says otherwise'],
    [2, 'Backup file not found or corrupted (nothing changed)'],
    [3, 'Database connection failed (nothing changed)'],
  ],
  env: [
    ['APP_SERVICES', 'compose services stopped during the swap and restarted after (bot); empty for none'],
    ['KEY_TABLES', 'tables that must exist and are counted in the summary (default: the two largest)'],
    ['DB_MODE, DATABASE_URL', 'as for backup'],
  ],
  notes: [
    'Order: verify the file, check the connection, confirm, take a safety backup, restore into a fresh',
    'scratch database, prove every row arrived, stop APP_SERVICES, swap the scratch copy in by rename,',
    'drop the old database, restart APP_SERVICES and wait for them to be healthy.',
  ],
  examples: ['restore toogoodtogo_20251227_030010', 'restore /opt/backups/postgres/toogoodtogo_20251227_030010.sql.gz --yes', 'restore --drill'],
}

await runMain(spec, { exitCodes: { not_found: 2, verify_failed: 2, connection: 3 }, failureLine: 'Restore failed' }, async (cli) => {
  const ctx = await openContext()
  if (flag(cli, 'drill')) return drill(ctx, cli.positionals[0])
  if (!cli.positionals[0]) throw new OpsError('usage', 'Missing the backup file or backup id to restore')
  log.info('Starting database restore')
  const source = resolveSource(ctx, cli.positionals[0])
  log.info(`Backup file: ${source.file}`)
  await verifyIntegrity(source)
  await checkConnection(ctx.db)
  await checkRestorePrivileges(ctx.db, ctx.db.database)
  await confirmDestructive(`This replaces database "${ctx.db.database}" with ${path.basename(source.file)}${ctx.cfg.APP_SERVICES.length ? ` and restarts ${ctx.cfg.APP_SERVICES.join(', ')}` : ''}.`, flag(cli, 'yes'))
  await takeSafetyBackup(ctx, source)
  const scratch = await restoreScratchCopy(ctx, source)
  await swapScratchIn(ctx, scratch, ctx.cfg.APP_SERVICES)
  await restartServices(ctx)
  log.info('Restore successful')
})

/** A backup id is looked up in the index (a strict pattern: no path can sneak in); anything else is a path. */
function resolveSource(ctx: Context, arg: string): Source {
  if (!arg.includes('/') && !arg.endsWith('.gz')) {
    if (!BACKUP_ID.test(arg)) throw new OpsError('not_found', `"${arg}" is neither a backup id (like toogoodtogo_20251228_030010) nor a file path`)
    const record = findBackup(readIndex(ctx.cfg.BACKUP_DIR), arg)
    if (!record) throw new OpsError('not_found', `Backup ${arg} is not in ${ctx.cfg.BACKUP_DIR}/backup_index.json`)
    return { file: record.file_path, record }
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

async function verifyIntegrity(source: Source): Promise<void> {
  log.info('Verifying backup integrity')
  const expected = source.record ? { sha256: source.record.sha256, rowCounts: source.record.row_counts } : {}
  await verifyBackupFile(source.file, expected)
}

async function takeSafetyBackup(ctx: Context, source: Source): Promise<void> {
  if (!isDryRun() && !(await databaseExists(ctx.db, ctx.db.database))) {
    log.warn(`Database ${ctx.db.database} does not exist yet; no safety backup needed`)
    return
  }
  log.info('Creating safety backup')
  const record = await createBackup(ctx.cfg, ctx.db, { type: 'manual', artifactId: null, reason: `safety backup before restoring ${path.basename(source.file)}` })
  log.info(`Safety backup: ${record.backup_id}`)
}

async function restartServices(ctx: Context): Promise<void> {
  const services = ctx.cfg.APP_SERVICES
  if (!services.length) {
    log.info('No application services configured (APP_SERVICES is empty); nothing to restart')
    return
  }
  log.info('Restarting services')
  await run(composeStart(ctx.compose!, services))
  log.info('Services started')
  if (isDryRun()) return
  const { report, waitedOut } = await waitUntilHealthy(ctx, SERVICES, ctx.cfg.HEALTH_CHECK_TIMEOUT * 1000)
  if (waitedOut) {
    const failing = Object.entries(report.services).filter(([, h]) => h!.status !== 'healthy' && h!.status !== 'not_deployed').map(([name, h]) => `${name}: ${h!.status} (${h!.detail})`)
    throw new OpsError('restore_failed', `The database was restored, but services are not healthy after ${ctx.cfg.HEALTH_CHECK_TIMEOUT}s: ${failing.join(', ')}`)
  }
  log.info('Health checks passed')
}

// ---- drill -------------------------------------------------------------------------------------

async function drill(ctx: Context, id: string | undefined): Promise<void> {
  const index = readIndex(ctx.cfg.BACKUP_DIR)
  const record = id ? findBackup(index, id) : index.backups.at(-1)
  if (!record) throw new OpsError('not_found', id ? `Backup ${id} is not in the index` : 'There are no backups to drill')
  log.info(`Starting restore drill of ${record.backup_id}`)
  let outcome: 'passed' | 'failed' = 'failed'
  let detail = ''
  try {
    await verifyIntegrity({ file: record.file_path, record })
    await checkConnection(ctx.db)
    const scratch = await restoreScratchCopy(ctx, { file: record.file_path, record })
    await dropDatabase(ctx.db, scratch)
    outcome = 'passed'
    detail = 'restored into a scratch database, every row accounted for'
  } catch (error) {
    detail = messageOf(error)
    throw error
  } finally {
    if (!isDryRun()) await recordDrill(ctx, record.backup_id, outcome, detail)
  }
  log.info(`Restore drill passed: ${record.backup_id}`)
}

async function recordDrill(ctx: Context, id: string, outcome: 'passed' | 'failed', detail: string): Promise<void> {
  await updateIndex(ctx.cfg.BACKUP_DIR, (index) => {
    const record = findBackup(index, id)
    if (record) record.last_drill = { at: isoSeconds(new Date()), outcome, detail }
  })
}
