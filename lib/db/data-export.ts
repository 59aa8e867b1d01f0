import fs from 'node:fs'
import path from 'node:path'
import type { BackupRecord } from './backup-index.ts'
import { SNAPSHOT_SQL } from './backup.ts'
import { log } from '../core/log.ts'
import { psql, psqlQuery, quoteLiteral, type Db } from '../commands/postgres.ts'
import { isDryRun } from '../core/shell.ts'
import { runStages } from '../core/runner.ts'

// Before a database is put back to a backup, every row the backup does not hold is exported as
// CSV (freshtrack's data export), so nothing is lost silently: an operator can re-import them.
// "Does not hold" is decided by transaction id against the snapshot the backup recorded, which no
// clock drift, long dump or missing created_at column can fool; timestamps are the fallback for
// backups made before snapshots were recorded, or on another server.
export interface TableInfo {
  /** schema-qualified, quoted */
  table: string
  /** a timestamp column (created_at, updated_at, ...) when the table has one */
  timestampColumn: string | null
}

export interface BackupPoint {
  created_at: string
  snapshot: string | null
  cluster_id: string | null
}

const XID_WRAP = 4294967296

/**
 * A row's xmin is 32 bits; the snapshot's ids carry the epoch. The row's full id is the newest
 * one below the current next id with the same low 32 bits (a live row's xid is never older than
 * 2^31 transactions).
 */
const FULL_XMIN = `(now_xid.next - ((now_xid.next - t.xmin::text::bigint) % ${XID_WRAP} + ${XID_WRAP}) % ${XID_WRAP})`

/** The WHERE clause selecting rows of one table that `backup` does not hold. Pure. */
export function notInBackupClause(backup: BackupPoint, table: TableInfo, cluster: { id: string | null; nextXid: number }): string {
  const knownSame = backup.cluster_id !== null && cluster.id === backup.cluster_id
  const knownOther = (backup.cluster_id !== null && cluster.id !== null && cluster.id !== backup.cluster_id) || (backup.snapshot !== null && cluster.nextXid < snapshotXmax(backup.snapshot))
  const clauses: string[] = []
  if (backup.snapshot && !knownOther) clauses.push(`NOT txid_visible_in_snapshot(${FULL_XMIN}, ${quoteLiteral(backup.snapshot)}::txid_snapshot)`)
  if (table.timestampColumn && (!backup.snapshot || !knownSame)) clauses.push(`t.${table.timestampColumn} >= ${quoteLiteral(backup.created_at)}::timestamptz`)
  // Nothing to tell old rows from new by: every row goes to the export, none is dropped unseen.
  return clauses.length ? clauses.join(' OR ') : 'true'
}

function snapshotXmax(snapshot: string): number {
  return Number(snapshot.split(':')[1])
}

export function selectNotInBackup(table: TableInfo, clause: string, what: 'rows' | 'count'): string {
  const columns = what === 'count' ? 'count(*)::bigint' : 't.*'
  return `WITH now_xid AS (SELECT txid_snapshot_xmax(txid_current_snapshot()) AS next) SELECT ${columns} FROM ${table.table} t, now_xid WHERE ${clause}`
}

async function userTables(db: Db, database: string): Promise<TableInfo[]> {
  const rows = (await psql(db, database, `
    SELECT quote_ident(t.table_schema) || '.' || quote_ident(t.table_name),
           (SELECT quote_ident(c.column_name) FROM information_schema.columns c
             WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name
               AND c.column_name IN ('updated_at', 'created_at', 'modified_at', 'inserted_at') AND c.data_type LIKE 'timestamp%'
             ORDER BY c.column_name DESC LIMIT 1)
    FROM information_schema.tables t
    WHERE t.table_type = 'BASE TABLE' AND t.table_schema NOT IN ('pg_catalog', 'information_schema')
    ORDER BY 1`, { read: true, timeoutMs: 60_000 })).stdout.trim()
  return rows.split('\n').filter(Boolean).map((line) => {
    const [table = '', column = ''] = line.split('|')
    return { table, timestampColumn: column || null }
  })
}

async function clusterNow(db: Db, database: string): Promise<{ id: string | null; nextXid: number }> {
  const [xids = '0:0:', id = ''] = (await psql(db, database, SNAPSHOT_SQL, { read: true, timeoutMs: 30_000 })).stdout.trim().split('|')
  return { id: id || null, nextXid: snapshotXmax(xids) }
}

interface Plan {
  table: TableInfo
  clause: string
}

async function planTables(db: Db, database: string, backup: BackupPoint): Promise<Plan[]> {
  const cluster = await clusterNow(db, database)
  return (await userTables(db, database)).map((table) => ({ table, clause: notInBackupClause(backup, table, cluster) }))
}

/** Rows per table of `database` that `backup` does not hold (tables with none are left out). */
export async function countRowsNotIn(db: Db, database: string, backup: BackupPoint): Promise<Record<string, number>> {
  return count(db, database, await planTables(db, database, backup))
}

async function count(db: Db, database: string, plans: Plan[]): Promise<Record<string, number>> {
  const counts: Record<string, number> = {}
  for (const { table, clause } of plans) {
    const n = Number((await psql(db, database, selectNotInBackup(table, clause, 'count'), { read: true, timeoutMs: 5 * 60_000 })).stdout.trim())
    if (n > 0) counts[table.table] = n
  }
  return counts
}

/** Writes `<dir>/<table>.csv` for every table with rows `backup` does not hold; returns the counts. */
export async function exportRowsNotIn(db: Db, database: string, backup: BackupPoint & Pick<BackupRecord, 'backup_id'>, dir: string): Promise<Record<string, number>> {
  const plans = await planTables(db, database, backup)
  const counts = await count(db, database, plans)
  if (Object.keys(counts).length === 0) {
    log.info(`No rows newer than backup ${backup.backup_id}: nothing to export`)
    return counts
  }
  if (!isDryRun()) fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  for (const { table, clause } of plans.filter((p) => counts[p.table.table])) {
    const file = path.join(dir, `${table.table.replace(/[^A-Za-z0-9_.-]/g, '_')}.csv`)
    const copy = `COPY (${selectNotInBackup(table, clause, 'rows')}) TO STDOUT WITH (FORMAT csv, HEADER)`
    await runStages([psqlQuery(db, database, copy, { mutates: false }), { writeTo: file }], db.timeoutMs)
  }
  const total = Object.values(counts).reduce((a, b) => a + b, 0)
  log.info(`Exported ${total} rows that backup ${backup.backup_id} does not hold to ${dir} (${Object.entries(counts).map(([t, n]) => `${n} in ${t}`).join(', ')})`)
  return counts
}
