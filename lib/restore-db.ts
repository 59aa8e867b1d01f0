import { setTimeout as sleep } from 'node:timers/promises'
import { diffCounts } from './backup.ts'
import type { BackupRecord } from './backup-index.ts'
import { composeStart, composeStop } from './compose.ts'
import type { Context } from './context.ts'
import { DumpInspector, type DumpFacts } from './dump-inspector.ts'
import { OpsError, messageOf } from './errors.ts'
import { fileStamp, formatCount } from './format.ts'
import { decompressor } from './gzip.ts'
import { log } from './log.ts'
import { onInterrupt } from './main.ts'
import { psqlQuery, psqlRestore, quoteIdent, quoteLiteral, type Db } from './postgres.ts'
import { capture, isDryRun, run, runStages, tryRun } from './runner.ts'
import { CopyTagCollector } from './streams.ts'

// Restoring never touches the live database until a full copy has been restored beside it and
// checked; then the two are swapped by renaming, in one transaction.
export function scratchName(database: string, now = new Date()): string {
  return `${database.slice(0, 40)}_restore_${fileStamp(now)}`
}

function sql(db: Db, statement: string, opts: { mutates?: boolean } = {}) {
  return psqlQuery(db, db.maintenanceDb, statement, { mutates: opts.mutates ?? true, timeoutMs: 60_000 })
}

export async function checkConnection(db: Db): Promise<void> {
  const result = await tryRun(sql(db, 'SELECT 1', { mutates: false })).catch((e: unknown) => ({ exitCode: 1, stdout: '', stderr: messageOf(e) }))
  if (result.exitCode !== 0) {
    throw new OpsError('connection', `Database connection failed (${db.mode === 'url' ? `${db.host}:${db.port}` : 'compose service postgres'}): ${result.stderr.trim().split('\n').pop() || `exit ${result.exitCode}`}`)
  }
}

export async function databaseExists(db: Db, name: string): Promise<boolean> {
  return (await capture(sql(db, `SELECT 1 FROM pg_database WHERE datname = ${quoteLiteral(name)}`, { mutates: false }))) === '1'
}

/** A managed database gives no superuser: say before anything changes that the role cannot do it. */
export async function checkRestorePrivileges(db: Db, live: string): Promise<void> {
  const row = await capture(
    sql(db, `SELECT r.rolsuper OR r.rolcreatedb, COALESCE(r.rolsuper OR pg_has_role(current_user, d.datdba, 'MEMBER'), true)
             FROM pg_roles r LEFT JOIN pg_database d ON d.datname = ${quoteLiteral(live)} WHERE r.rolname = current_user`, { mutates: false }),
  )
  const [canCreate, ownsLive] = row.split('|')
  if (canCreate !== 't') throw new OpsError('restore_failed', `Role "${db.user}" cannot create databases (needs CREATEDB): a restore builds a fresh copy beside the live database first. Grant it with: ALTER ROLE ${quoteIdent(db.user)} CREATEDB`)
  if (ownsLive !== 't') throw new OpsError('restore_failed', `Role "${db.user}" does not own database "${live}", so it cannot rename it during the swap`)
}

export async function createDatabase(db: Db, name: string): Promise<void> {
  await run(sql(db, `CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0`))
}

export async function dropDatabase(db: Db, name: string): Promise<void> {
  await run(sql(db, `DROP DATABASE IF EXISTS ${quoteIdent(name)} WITH (FORCE)`))
}

export interface Restored {
  facts: DumpFacts
  copyTags: number[]
}

/** gunzip < file | (count rows) | psql -v ON_ERROR_STOP=1 scratch, streamed. */
export async function restoreInto(db: Db, database: string, file: string): Promise<Restored> {
  const inspector = new DumpInspector()
  const tags = new CopyTagCollector()
  try {
    await runStages([{ readFrom: file }, await decompressor(), inspector, psqlRestore(db, database), tags], db.timeoutMs)
  } catch (error) {
    throw new OpsError('restore_failed', `Restoring ${file} failed: ${messageOf(error)}`, { cause: error })
  }
  return { facts: inspector.facts(), copyTags: tags.counts }
}

/**
 * Proves the copy holds every row: the dump is complete, the server's COPY tags equal the rows in
 * the stream, those equal the counts recorded at backup time, and the key tables exist with an
 * exact count. Returns the contract's summary, "15,432 users, 2,341 businesses".
 */
export async function verifyRestored(db: Db, database: string, restored: Restored, recorded: Record<string, number> | null, keyTables: string[]): Promise<string> {
  if (isDryRun()) return '(dry run)'
  const { facts, copyTags } = restored
  if (!facts.complete) throw new OpsError('restore_failed', 'The dump ended without its completion trailer; the restored copy is incomplete')
  const streamed = Object.values(facts.rowCounts)
  if (copyTags.length !== streamed.length || copyTags.some((n, i) => n !== streamed[i])) {
    throw new OpsError('restore_failed', `The server stored different row counts than the dump holds (COPY tags ${copyTags.join(',')} vs ${streamed.join(',')})`)
  }
  if (recorded) {
    const diff = diffCounts(recorded, facts.rowCounts)
    if (diff) throw new OpsError('restore_failed', `Restored rows differ from the backup record: ${diff}`)
  }
  const shown = tablesToShow(facts.rowCounts, keyTables)
  const parts: string[] = []
  for (const table of shown) {
    const counted = Number(await capture(psqlQuery(db, database, `SELECT count(*)::bigint FROM ${table}`, { mutates: false })))
    if (counted !== facts.rowCounts[table]) throw new OpsError('restore_failed', `Table ${table} has ${counted} rows after the restore, the dump held ${facts.rowCounts[table]}`)
    parts.push(`${formatCount(counted)} ${table.replace(/^public\./, '')}`)
  }
  return parts.join(', ') || 'no tables with data'
}

/** KEY_TABLES (each must exist), or else the two largest tables. */
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

/**
 * Renames live → aside and scratch → live in one transaction, after ending other sessions on
 * live. A session that reconnects in between makes the rename fail as a whole; try again.
 */
export async function swapIn(db: Db, scratch: string, live: string): Promise<string | null> {
  const liveExists = isDryRun() ? true : await databaseExists(db, live)
  const aside = `${live.slice(0, 40)}_pre_restore_${fileStamp(new Date())}`
  const renames = liveExists
    ? `ALTER DATABASE ${quoteIdent(live)} RENAME TO ${quoteIdent(aside)}; ALTER DATABASE ${quoteIdent(scratch)} RENAME TO ${quoteIdent(live)};`
    : `ALTER DATABASE ${quoteIdent(scratch)} RENAME TO ${quoteIdent(live)};`
  const terminate = `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname IN (${quoteLiteral(live)}, ${quoteLiteral(scratch)}) AND pid <> pg_backend_pid();`
  for (let attempt = 1; ; attempt++) {
    const result = await tryRun(sql(db, `${terminate} BEGIN; ${renames} COMMIT;`))
    if (result.exitCode === 0) return liveExists ? aside : null
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

export async function restoreScratchCopy(ctx: Context, source: Source): Promise<string> {
  const scratch = scratchName(ctx.db.database)
  log.info('Creating fresh database')
  await createDatabase(ctx.db, scratch)
  const forget = onInterrupt(() => dropDatabase(ctx.db, scratch))
  try {
    log.info('Restoring from backup')
    const restored = await restoreInto(ctx.db, scratch, source.file)
    log.info('Restoration complete')
    log.info('Verifying restored data')
    const summary = await verifyRestored(ctx.db, scratch, restored, source.record?.row_counts ?? null, ctx.cfg.KEY_TABLES)
    log.info(`Verification successful: ${summary}`)
    return scratch
  } catch (error) {
    log.error(`Restore into scratch database ${scratch} failed; dropping it. The live database was not touched`)
    await dropDatabase(ctx.db, scratch).catch((e) => log.warn(`Could not drop ${scratch}: ${messageOf(e)}`))
    throw error
  } finally {
    forget()
  }
}

/** Stops `services`, swaps the verified copy in, drops the old database; on failure starts them again. */
export async function swapScratchIn(ctx: Context, scratch: string, services: string[]): Promise<void> {
  if (services.length) {
    log.info('Stopping application services')
    await run(composeStop(ctx.compose!, services))
  }
  log.info('Dropping existing database')
  let aside: string | null
  try {
    aside = await swapIn(ctx.db, scratch, ctx.db.database)
  } catch (error) {
    await dropDatabase(ctx.db, scratch).catch(() => undefined)
    if (services.length) await run(composeStart(ctx.compose!, services)).catch(() => undefined)
    throw error
  }
  if (aside) await dropDatabase(ctx.db, aside).catch((e) => log.warn(`The previous database was kept as ${aside}: ${messageOf(e)}`))
}

