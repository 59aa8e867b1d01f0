import { composeBase, composeEnv, composeExec, type ComposeProject } from './compose.ts'
import type { Config } from '../core/config.ts'
import { parseDatabaseUrl, type DatabaseUrl } from '../core/database-url.ts'
import { OpsError } from '../core/errors.ts'
import type { ProcessPromise } from 'zx'
import type { Command } from '../core/runner.ts'
import { $, $read, type ShellOptions } from '../core/shell.ts'

// Where pg_dump and psql run. compose: inside the postgres service, so their version matches the
// server. url: on this host against DATABASE_URL (a managed database, or a host cluster). The
// password travels in PGPASSWORD, never in argv.
export type Db =
  | { mode: 'compose'; compose: ComposeProject; user: string; database: string; maintenanceDb: string; timeoutMs: number }
  | (DatabaseUrl & { maintenanceDb: string; timeoutMs: number })

export function dbFromConfig(cfg: Config, compose: ComposeProject | null): Db {
  const timeoutMs = cfg.DB_OPERATION_TIMEOUT * 1000
  if (cfg.DB_MODE === 'compose') {
    if (!compose) throw new OpsError('config', 'DB_MODE=compose needs the compose project')
    return { mode: 'compose', compose, user: cfg.POSTGRES_USER, database: cfg.POSTGRES_DB, maintenanceDb: cfg.PG_MAINTENANCE_DB, timeoutMs }
  }
  if (!cfg.DATABASE_URL) throw new OpsError('config', 'DB_MODE=url needs DATABASE_URL')
  return { ...parseDatabaseUrl(cfg.DATABASE_URL), maintenanceDb: cfg.PG_MAINTENANCE_DB, timeoutMs }
}

function onDb(db: Db, tool: string, args: string[], env: Record<string, string> = {}): Command {
  if (db.mode === 'compose') return { ...composeExec(db.compose, 'postgres', [tool, '-U', db.user, ...args], env), timeoutMs: db.timeoutMs }
  return {
    argv: [tool, '-h', db.host, '-p', db.port, '-U', db.user, ...args],
    env: { ...db.params, ...(db.password ? { PGPASSWORD: db.password } : {}), PGCONNECT_TIMEOUT: '10', ...env },
    timeoutMs: db.timeoutMs,
  }
}

/** Plain SQL so `gunzip | psql` restores it anywhere; --no-owner so a role missing elsewhere does not stop it. */
export function pgDumpCommand(db: Db): Command {
  return { ...onDb(db, 'pg_dump', ['--format=plain', '--no-owner', '--dbname', db.database]), mutates: false }
}

/** `pg_dump --version` where pg_dump runs (the postgres service, or this host). */
export async function pgDumpVersion(db: Db): Promise<string> {
  const where = db.mode === 'compose' ? [...composeBase(db.compose), 'exec', '-T', 'postgres'] : []
  const env = db.mode === 'compose' ? composeEnv(db.compose) : {}
  return (await $read({ env, timeoutMs: 30_000 })`${where} pg_dump --version`).stdout.trim()
}

const PSQL_FLAGS = ['--no-psqlrc', '--set', 'ON_ERROR_STOP=1']

/** One SQL statement, results unaligned and tuples-only, for a script to read. */
export function psqlQuery(db: Db, database: string, sql: string, opts: { mutates?: boolean; timeoutMs?: number } = {}): Command {
  return {
    ...onDb(db, 'psql', [...PSQL_FLAGS, '--no-align', '--tuples-only', '--quiet', '--dbname', database, '--command', sql]),
    mutates: opts.mutates ?? true,
    ...(opts.timeoutMs ? { timeoutMs: opts.timeoutMs } : {}),
  }
}

/**
 * One statement through `$` (`read`: `$read`, which runs under --dry-run too), as a shell script
 * would run `psql -c`: `(await psql(db, database, 'SELECT 1', { read: true })).stdout`.
 */
export function psql(db: Db, database: string, sql: string, options: ShellOptions & { read?: boolean } = {}): ProcessPromise {
  const { argv, env } = psqlQuery(db, database, sql)
  const { read, ...shell } = options
  return (read ? $read : $)({ timeoutMs: db.timeoutMs, ...shell, env: { ...env, ...shell.env } })`${argv}`
}

/**
 * Reads a dump on stdin. Not --quiet: psql then prints each statement's tag, and the `COPY n` tags
 * are the server's own count of the rows it stored. A bigger maintenance_work_mem speeds up the
 * index builds that follow the data. In one transaction, the index builds and constraint checks
 * read rows of their own transaction and leave the pages as COPY wrote them; across transactions
 * they set hint bits on every page, and the whole table is written out a second time.
 */
export function psqlRestore(db: Db, database: string, opts: { singleTransaction: boolean; restrictKey: string }): Command {
  // `\restrict KEY` first, then the dump on stdin: psql refuses every backslash command but
  // `\unrestrict KEY` from then on, and the dump, written before KEY was drawn, cannot know it.
  // The key is in argv: a local user who reads it learns nothing the dump's author could use.
  const input = ['--command', `\\restrict ${opts.restrictKey}`, '--file', '-']
  return onDb(db, 'psql', [...PSQL_FLAGS, ...(opts.singleTransaction ? ['--single-transaction'] : []), '--dbname', database, ...input], {
    PGOPTIONS: '-c maintenance_work_mem=256MB -c synchronous_commit=off',
  })
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

/** An anonymous PL/pgSQL block, dollar-quoted with a tag its statements cannot contain. */
export function doBlock(statements: string): string {
  let tag = '$do$'
  for (let n = 1; statements.includes(tag); n++) tag = `$do${n}$`
  return `DO ${tag} BEGIN ${statements} END ${tag}`
}

export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`
}

/** Free space of the data directory's volume, seen from inside the postgres service (compose mode). */
export function dataDirectoryFree(compose: ComposeProject, options: ShellOptions = {}): ProcessPromise {
  return $read({ env: composeEnv(compose), timeoutMs: 30_000, ...options })`${composeBase(compose)} exec -T postgres sh -c ${'df -Pk "${PGDATA:-/var/lib/postgresql/data}"'}`
}
