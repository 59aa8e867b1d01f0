import fs from 'node:fs'
import path from 'node:path'
import { log } from './log.ts'
import { psqlQuery, quoteLiteral, type Db } from './postgres.ts'
import { capture, isDryRun, runStages } from './runner.ts'

// Before a database is put back to a backup, the rows written since that backup are exported as
// CSV (freshtrack's data export), so nothing is lost silently: an operator can re-import them.
interface TableSince {
  table: string
  column: string
}

async function tablesWithTimestamps(db: Db): Promise<TableSince[]> {
  const rows = await capture(psqlQuery(db, db.database, `
    SELECT DISTINCT ON (c.table_name) quote_ident(c.table_schema) || '.' || quote_ident(c.table_name), quote_ident(c.column_name)
    FROM information_schema.columns c JOIN information_schema.tables t USING (table_schema, table_name)
    WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
      AND c.column_name IN ('updated_at', 'created_at', 'modified_at', 'inserted_at')
      AND c.data_type LIKE 'timestamp%'
    ORDER BY c.table_name, c.column_name DESC`, { mutates: false, timeoutMs: 60_000 }))
  return rows.split('\n').filter(Boolean).map((line) => {
    const [table, column] = line.split('|')
    return { table: table!, column: column! }
  })
}

function sinceClause(t: TableSince, since: string): string {
  return `${t.column} >= ${quoteLiteral(since)}::timestamptz`
}

/** Rows per table written at or after `since` (an ISO time), for the confirmation prompt. */
export async function countRowsSince(db: Db, since: string): Promise<Record<string, number>> {
  const counts: Record<string, number> = {}
  for (const t of await tablesWithTimestamps(db)) {
    const n = Number(await capture(psqlQuery(db, db.database, `SELECT count(*)::bigint FROM ${t.table} WHERE ${sinceClause(t, since)}`, { mutates: false, timeoutMs: 60_000 })))
    if (n > 0) counts[t.table] = n
  }
  return counts
}

/** Writes `<dir>/<table>.csv` for every table with rows since `since`; returns the row counts. */
export async function exportRowsSince(db: Db, since: string, dir: string): Promise<Record<string, number>> {
  const counts = await countRowsSince(db, since)
  if (isDryRun() || Object.keys(counts).length === 0) return counts
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
  const tables = await tablesWithTimestamps(db)
  for (const table of Object.keys(counts)) {
    const t = tables.find((x) => x.table === table)!
    const file = path.join(dir, `${table.replace(/[^A-Za-z0-9_.-]/g, '_')}.csv`)
    const copy = `COPY (SELECT * FROM ${t.table} WHERE ${sinceClause(t, since)}) TO STDOUT WITH (FORMAT csv, HEADER)`
    await runStages([psqlQuery(db, db.database, copy, { mutates: false }), { writeTo: file }], db.timeoutMs)
  }
  const total = Object.values(counts).reduce((a, b) => a + b, 0)
  log.info(`Exported ${total} rows written since ${since} to ${dir}`)
  return counts
}
