import { randomBytes } from 'node:crypto'
import fs from 'node:fs'
import { sleep } from 'zx'
import { checksumMismatch, createBackup, incompleteDump } from './backup.ts'
import type { BackupRecord } from './backup-index.ts'
import { composeBase, composeEnv } from '../commands/compose.ts'
import { requireCompose, type Context } from '../stack/context.ts'
import { exportRowsNotIn } from './data-export.ts'
import { handRestoredCopyToApp } from './app-role.ts'
import { DumpInspector, MetaCommandGuard, type DumpFacts } from './dump-inspector.ts'
import { OpsError, messageOf } from '../core/errors.ts'
import { fileStamp, formatCount } from '../core/format.ts'
import { FAST_GZIP_LEVEL, fileDecompressor } from '../commands/gzip.ts'
import { log } from '../core/log.ts'
import { onInterrupt } from '../core/interrupts.ts'
import { doBlock, psql, psqlRestore, quoteIdent, quoteLiteral, type Db } from '../commands/postgres.ts'
import { CommandFailed, runStages } from '../core/runner.ts'
import { $, isDryRun, $read } from '../core/shell.ts'
import { CopyTagCollector, sha256OfFile } from '../core/streams.ts'
import { SERVICES, unhealthyLines, waitUntilHealthy } from '../stack/health.ts'

// Restoring never touches the live database until a full copy has been restored beside it and
// checked; then the two are swapped by renaming, in one transaction.
export function scratchName(database: string, now = new Date()): string {
  return `${database.slice(0, 40)}_restore_${fileStamp(now)}`
}

function sql(db: Db, statement: string, opts: { read?: boolean; nothrow?: boolean } = {}) {
  return psql(db, db.maintenanceDb, statement, { timeoutMs: 60_000, ...opts })
}

/**
 * One round trip, before anything changes: the server answers (else `connection`, exit 3), and the
 * role may create the scratch copy and, when it is to be swapped in, rename `live` (a managed
 * database gives no superuser: say so now rather than halfway through).
 */
export async function checkRestoreAccess(db: Db, live: string | null): Promise<void> {
  const result = await sql(db, `SELECT r.rolsuper OR r.rolcreatedb, COALESCE(r.rolsuper OR pg_has_role(current_user, d.datdba, 'MEMBER'), true)
             FROM pg_roles r LEFT JOIN pg_database d ON d.datname = ${quoteLiteral(live ?? '')} WHERE r.rolname = current_user`, { read: true, nothrow: true }).catch((e: unknown) => ({ exitCode: 1, stdout: '', stderr: messageOf(e) }))
  if (result.exitCode !== 0) {
    throw new OpsError('connection', `Database connection failed (${db.mode === 'url' ? `${db.host}:${db.port}` : 'compose service postgres'}): ${result.stderr.trim().split('\n').pop() || `exit ${result.exitCode}`}`)
  }
  const [canCreate, ownsLive] = result.stdout.trim().split('|')
  if (canCreate !== 't') throw new OpsError('restore_failed', `Role "${db.user}" cannot create databases (needs CREATEDB): a restore builds a fresh copy beside the live database first. Grant it with: ALTER ROLE ${quoteIdent(db.user)} CREATEDB`)
  if (live && ownsLive !== 't') throw new OpsError('restore_failed', `Role "${db.user}" does not own database "${live}", so it cannot rename it during the swap`)
}

export async function createDatabase(db: Db, name: string): Promise<void> {
  await sql(db, `CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0`)
}

export async function dropDatabase(db: Db, name: string): Promise<void> {
  await sql(db, `DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`)
}

export interface Restored {
  facts: DumpFacts
  copyTags: number[]
  sha256: string
}

/**
 * gunzip file | [count rows] | psql -v ON_ERROR_STOP=1 scratch | (COPY tags), streamed, the file
 * verified on the way in. A file the index records is hashed alongside (a matching sha256 makes it
 * the file whose rows and trailer were checked when it was made), so gunzip feeds psql through a
 * kernel pipe; any other file has its rows counted and its trailer found in the stream. A file that
 * does not decompress is `verify_failed`; its partial load stays in the scratch database, which the
 * caller drops.
 */
export async function restoreInto(db: Db, database: string, source: Source): Promise<Restored> {
  const inspector = source.record ? null : new DumpInspector()
  // Every file, the toolkit's own too: a record proves only that the bytes are the ones indexed,
  // and the index and the bucket can be written by others than this toolkit.
  const guard = new MetaCommandGuard()
  const tags = new CopyTagCollector()
  const gunzip = await fileDecompressor(source.file)
  const hashing = source.record && !isDryRun() ? sha256OfFile(source.file) : Promise.resolve('')
  const psql = psqlRestore(db, database, { singleTransaction: fitsInOneTransaction(source), restrictKey: randomBytes(24).toString('hex') })
  try {
    await runStages([gunzip, ...(inspector ? [inspector] : []), guard, psql, tags], db.timeoutMs)
  } catch (error) {
    await hashing.catch(() => undefined)
    // A corrupt stream inflates to garbage, which may hold anything the guard refuses: the guard's
    // error can win the race with the decompressor's, so the file's own integrity decides.
    if (guard.found && !(await gzipIntact(source.file))) throw corrupted(source.file, 'its gzip stream does not decompress (gzip -t)')
    if (guard.found) throw metaCommandIn(source.file, `line ${guard.found.line} is the psql meta-command ${guard.found.command}`)
    if (error instanceof CommandFailed && error.command === psql) {
      // one the guard could not see (in the middle of a line): psql refused it under the key
      const refused = RESTRICTED.exec(error.message)
      if (refused) throw metaCommandIn(source.file, `psql refused a meta-command at line ${Number(refused[1])}`)
    }
    if (error instanceof CommandFailed && error.command === gunzip) throw corrupted(source.file, messageOf(error), error)
    // psql also fails on a dump cut off mid-statement; that the whole file was read without its
    // trailer is the real story.
    if (inspector?.ended && !inspector.facts().complete) throw incompleteDump(source.file)
    throw new OpsError('restore_failed', `Restoring ${source.file} failed: ${messageOf(error)}`, { cause: error })
  }
  const facts = inspector?.facts() ?? { rowCounts: source.record!.row_counts, pgDumpVersion: source.record!.pg_dump_version, complete: true, bytes: 0 }
  return { facts, copyTags: tags.counts, sha256: await hashing }
}

const RESTRICTED = /psql:<stdin>:(\d+): error: backslash commands are restricted/

async function gzipIntact(file: string): Promise<boolean> {
  return (await $read({ nothrow: true, timeoutMs: 30 * 60_000 })`gzip --test -- ${file}`).exitCode === 0
}

function corrupted(file: string, why: string, cause?: unknown): OpsError {
  return new OpsError('verify_failed', `Backup ${file} is corrupted: ${why}`, { cause })
}

function metaCommandIn(file: string, where: string): OpsError {
  return new OpsError('verify_failed', `Backup ${file} holds a psql meta-command, code that would run on this host: ${where}. Not restored; the live database was not touched`)
}

// One transaction holds a lock on every table, index and sequence it creates until it commits, and
// the server's lock table has room for 64 per connection by default: a schema of a few hundred tables
// fits with room to spare, a schema of thousands of partitions would not.
const MAX_TABLES_IN_ONE_TRANSACTION = 300

/**
 * A dump this toolkit made (recorded in the index) holds only statements that may run in one
 * transaction, and the record says how many tables it has. Any other file is restored statement
 * by statement, as `gunzip | psql` would.
 */
function fitsInOneTransaction(source: Source): boolean {
  return source.record !== null && Object.keys(source.record.row_counts).length <= MAX_TABLES_IN_ONE_TRANSACTION
}

/**
 * Proves the copy holds every row: the file is the one recorded (sha256) or else the dump is
 * complete, the server's COPY tags equal the rows recorded at backup time (or counted in the
 * stream), and the tables shown exist in the copy. Returns the contract's summary, "15,432 users,
 * 2,341 businesses", counted by the server as it stored them.
 */
export async function verifyRestored(db: Db, database: string, source: Source, restored: Restored, keyTables: string[]): Promise<string> {
  if (isDryRun()) return '(dry run)'
  const { facts, copyTags, sha256 } = restored
  const recorded = source.record
  if (recorded && recorded.sha256 !== sha256) throw checksumMismatch(source.file, sha256, recorded.sha256)
  if (!facts.complete) throw incompleteDump(source.file)
  const streamed = Object.values(facts.rowCounts)
  if (copyTags.length !== streamed.length || copyTags.some((n, i) => n !== streamed[i])) {
    throw new OpsError('restore_failed', `The server stored different row counts than the backup holds (COPY tags ${copyTags.join(',')} vs ${streamed.join(',')})`)
  }
  const shown = tablesToShow(facts.rowCounts, keyTables)
  await requireTables(db, database, shown)
  return shown.map((table) => `${formatCount(facts.rowCounts[table]!)} ${table.replace(/^public\./, '')}`).join(', ') || 'no tables with data'
}

/** KEY_TABLES (each must be in the dump), or else the two largest tables. */
function tablesToShow(counts: Record<string, number>, keyTables: string[]): string[] {
  if (keyTables.length === 0) {
    return Object.entries(counts)
      .filter(([, rows]) => rows > 0)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 2)
      .map(([t]) => t)
  }
  return keyTables.map((wanted) => {
    const found = Object.keys(counts).find((t) => t === wanted || t === `public.${wanted}` || t === `public.${quoteIdent(wanted)}`)
    if (!found) throw new OpsError('restore_failed', `Key table "${wanted}" is not in the backup`)
    return found
  })
}

async function requireTables(db: Db, database: string, tables: string[]): Promise<void> {
  if (tables.length === 0) return
  const probes = tables.map((t) => `to_regclass(${quoteLiteral(t)}) IS NOT NULL`).join(', ')
  const found = (await psql(db, database, `SELECT ${probes}`, { read: true })).stdout.trim().split('|')
  const missing = tables.filter((_, i) => found[i] !== 't')
  if (missing.length) throw new OpsError('restore_failed', `Tables missing from the restored copy: ${missing.join(', ')}`)
}

/**
 * Renames live → aside (when there is a live database) and scratch → live in one statement, after
 * ending other sessions on both. Returns the aside name, or null when there was no live database.
 * A session that reconnects in between makes the rename fail as a whole; try again.
 */
export async function swapIn(db: Db, scratch: string, live: string): Promise<string | null> {
  const aside = `${live.slice(0, 40)}_pre_restore_${fileStamp()}`
  const terminate = `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname IN (${quoteLiteral(live)}, ${quoteLiteral(scratch)}) AND pid <> pg_backend_pid();`
  const moveLiveAside = `IF EXISTS (SELECT FROM pg_database WHERE datname = ${quoteLiteral(live)}) THEN ALTER DATABASE ${quoteIdent(live)} RENAME TO ${quoteIdent(aside)}; END IF;`
  const renames = `${moveLiveAside} ALTER DATABASE ${quoteIdent(scratch)} RENAME TO ${quoteIdent(live)};`
  const swap = `${terminate} ${doBlock(renames)}; SELECT EXISTS (SELECT FROM pg_database WHERE datname = ${quoteLiteral(aside)});`
  for (let attempt = 1; ; attempt++) {
    const result = await sql(db, swap, { nothrow: true })
    if (result.exitCode === 0) return isDryRun() || result.stdout.trim().endsWith('t') ? aside : null
    if (attempt >= 5 || !/being accessed by other users/.test(result.stderr)) {
      throw new OpsError('restore_failed', `Swapping the restored database in failed: ${result.stderr.trim().split('\n').pop()}`)
    }
    log.warn(`Database ${live} is still in use; ending its sessions again (attempt ${attempt}/5)`)
    await sleep(1000)
  }
}

// ---- the steps restore.ts, deploy.ts and rollback.ts share ----------------------------------------

export interface Source {
  file: string
  record: BackupRecord | null
}

/**
 * The checks that cost nothing, before anything is touched: the file is readable, starts like gzip
 * and has the size recorded for it. The full proof (checksum, every byte decompresses, the dump's
 * trailer) comes as it streams into the scratch database.
 */
export function checkSourceLooksIntact(source: Source): void {
  if (isDryRun()) return
  const { file, record } = source
  const head = Buffer.alloc(2)
  let size: number
  try {
    const fd = fs.openSync(file, 'r')
    try {
      size = fs.fstatSync(fd).size
      fs.readSync(fd, head, 0, 2, 0)
    } finally {
      fs.closeSync(fd)
    }
  } catch (error) {
    throw new OpsError('not_found', `Backup file not found or not readable: ${file} (${messageOf(error)})`)
  }
  if (head[0] !== 0x1f || head[1] !== 0x8b) throw new OpsError('verify_failed', `Backup ${file} is corrupted or not a backup: it is not gzip`)
  if (record && record.file_size_bytes !== size) {
    throw new OpsError('verify_failed', `Backup ${file} does not match its record: ${size} bytes on disk, ${record.file_size_bytes} when it was made`)
  }
}

export async function restoreScratchCopy(ctx: Context, source: Source): Promise<string> {
  const scratch = scratchName(ctx.db.database)
  log.info('Creating fresh database')
  await createDatabase(ctx.db, scratch)
  const forget = onInterrupt(() => dropDatabase(ctx.db, scratch))
  try {
    log.info('Restoring from backup')
    const restored = await restoreInto(ctx.db, scratch, source)
    log.info('Restoration complete')
    log.info('Verifying restored data')
    const summary = await verifyRestored(ctx.db, scratch, source, restored, ctx.cfg.KEY_TABLES)
    log.info(`Verification successful: ${summary}`)
    await handRestoredCopyToApp(ctx, scratch)
    return scratch
  } catch (error) {
    log.error(`Restore into scratch database ${scratch} failed; dropping it. The live database was not touched`)
    await dropDatabase(ctx.db, scratch).catch((e) => log.warn(`Could not drop ${scratch}: ${messageOf(e)}`))
    throw error
  } finally {
    forget()
  }
}

/**
 * Stops `services` and swaps the verified copy in; on failure starts them again. Returns the
 * previous database, renamed aside (null when there was none), for settleReplacedDatabase.
 */
export async function swapScratchIn(ctx: Context, scratch: string, services: string[]): Promise<string | null> {
  if (services.length) {
    log.info('Stopping application services')
    const p = requireCompose(ctx)
    await $({ env: composeEnv(p), timeoutMs: (ctx.cfg.STOP_TIMEOUT + 60) * 1000 })`${composeBase(p)} stop --timeout ${ctx.cfg.STOP_TIMEOUT} ${services}`
  }
  log.info('Dropping existing database')
  try {
    return await swapIn(ctx.db, scratch, ctx.db.database)
  } catch (error) {
    await dropDatabase(ctx.db, scratch).catch(() => undefined)
    if (services.length) await startServices(ctx, services).catch(() => undefined)
    throw error
  }
}

/**
 * Puts `backup` in place of the live database: a verified copy is restored beside it while the
 * services keep running, then they stop and the copy is swapped in. Returns the replaced database,
 * renamed aside (null when there was none): from the swap on nothing writes to it, so it holds
 * every row committed up to then, for settleReplacedDatabase.
 */
export async function replaceLiveWith(ctx: Context, backup: BackupRecord, services: string[]): Promise<string | null> {
  const scratch = await restoreScratchCopy(ctx, { file: backup.file_path, record: backup })
  return swapScratchIn(ctx, scratch, services)
}

export interface Replaced {
  /** why the safety backup exists, recorded in the index */
  reason: string
  /** export what this backup does not hold from the replaced database, into `dir` */
  exportSince?: { backup: BackupRecord; dir: string }
}

/**
 * After the swap: the rows the restored backup lacks are exported as CSV from the replaced
 * database, which is then dumped as a safety backup and dropped. Whatever fails keeps the
 * replaced database, and the log says where it is: nothing committed is ever dropped unseen.
 */
export async function settleReplacedDatabase(ctx: Context, aside: string | null, replaced: Replaced): Promise<void> {
  if (!aside) {
    log.info(`Database ${ctx.db.database} did not exist before; no safety backup needed`)
    return
  }
  const keep = () => log.warn(`The previous database is kept as ${aside}; drop it once it is no longer needed: DROP DATABASE ${quoteIdent(aside)}`)
  const forget = onInterrupt(() => log.warn(`Interrupted: the previous database is kept as ${aside}`))
  try {
    if (replaced.exportSince) await exportRowsNotIn(ctx.db, aside, replaced.exportSince.backup, replaced.exportSince.dir)
    log.info(`Creating safety backup of the previous database (renamed ${aside})`)
    const record = await createBackup(ctx.cfg, ctx.db, { type: 'manual', artifactId: null, reason: replaced.reason, fromDatabase: aside, level: FAST_GZIP_LEVEL })
    log.info(`Safety backup: ${record.backup_id}`)
  } catch (error) {
    log.warn(`Keeping the previous database: ${messageOf(error)}`)
    keep()
    return
  } finally {
    forget()
  }
  await dropDatabase(ctx.db, aside).catch((e) => {
    log.warn(`Could not drop it: ${messageOf(e)}`)
    keep()
  })
}

/** APP_SERVICES started again after the database changed under them, and waited for until healthy. */
/** `start`, not `up`: the same containers come back with the image they ran, whatever APP_VERSION says. */
async function startServices(ctx: Context, services: string[]): Promise<void> {
  const p = requireCompose(ctx)
  await $({ env: composeEnv(p) })`${composeBase(p)} start ${services}`
}

export async function restartAppServices(ctx: Context, failurePrefix: string): Promise<void> {
  const services = ctx.cfg.APP_SERVICES
  if (!services.length) {
    log.info('No application services configured (APP_SERVICES is empty); nothing to restart')
    return
  }
  log.info('Restarting services')
  await startServices(ctx, services)
  log.info('Services started')
  if (isDryRun()) return
  const { report, waitedOut, dead } = await waitUntilHealthy(ctx, SERVICES, ctx.cfg.HEALTH_CHECK_TIMEOUT * 1000)
  if (waitedOut) {
    throw new OpsError('restore_failed', `${failurePrefix}services are not healthy${dead ? `: ${dead}` : ` after ${ctx.cfg.HEALTH_CHECK_TIMEOUT}s`}: ${unhealthyLines(report).join(', ')}`)
  }
  log.info('Health checks passed')
}

/**
 * The last word before "Restore successful": a query on the restored database. The server can go
 * down after the swap (a disk that filled up: "database system is shut down") while every step
 * before said success; a server starting up again gets a few seconds.
 */
export async function requireServerUp(ctx: Context): Promise<void> {
  if (isDryRun()) return
  for (let attempt = 1; ; attempt++) {
    const answer = await psql(ctx.db, ctx.db.database, 'SELECT count(*) FROM pg_class', { read: true, nothrow: true, timeoutMs: 30_000 }).catch((e: unknown) => ({ exitCode: 1, stdout: '', stderr: messageOf(e) }))
    if (answer.exitCode === 0) break
    // psql's own line ("connection ... failed: Connection refused"), not the hint after it.
    const lines = answer.stderr.trim().split('\n')
    const reason = (lines.find((line) => /error:|FATAL:/.test(line)) ?? lines.pop() ?? '').replace(/^psql: error: /, '') || `psql exit ${answer.exitCode}`
    if (attempt >= 5 || !/starting up|in recovery mode/.test(reason)) {
      throw new OpsError('restore_failed', `The database was restored, but the server does not answer a query on ${ctx.db.database}: ${reason}`)
    }
    await sleep(2000)
  }
  log.info(`The server answers queries on ${ctx.db.database}`)
}
