import crypto from 'node:crypto'
import type { Context } from '../stack/context.ts'
import { writeContainerEnvFiles } from '../core/container-env.ts'
import { readEnvFile, setEnvValue } from '../core/env-file.ts'
import { OpsError } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { addSecret } from '../core/redact.ts'
import { isDryRun } from '../core/shell.ts'
import { doBlock, psql, quoteIdent, quoteLiteral } from '../commands/postgres.ts'
import { parseDatabaseUrl } from '../core/database-url.ts'

// The bot connects with DATABASE_URL as a role of its own that owns the application's database
// and every object in it, but is no superuser (a superuser's `COPY ... FROM PROGRAM` is a shell in
// the postgres container). The toolkit keeps POSTGRES_USER, the superuser, for backups and
// restores. The role's name and password live in DATABASE_URL only: the file is the truth, and
// this step makes the cluster match it (a new droplet, a restored volume, an edited password).

/** The role a droplet whose bot still connects as POSTGRES_USER is moved to. */
export const APP_ROLE = 'bot'

const ROLE_NAME = /^[a-z_][a-z0-9_]{0,62}$/

export interface AppRole {
  user: string
  password: string
}

/**
 * The application's role as DATABASE_URL names it, when the bot's database is the compose service
 * and the role is not the superuser; null otherwise (url mode, another host, or a bot that still
 * connects as POSTGRES_USER: see moveBotOffSuperuser).
 */
export function appRoleOf(databaseUrl: string | undefined, superuser: string): AppRole | null {
  if (!databaseUrl) return null
  const url = parseDatabaseUrl(databaseUrl)
  if (url.host !== 'postgres' || url.user === superuser) return null
  if (!ROLE_NAME.test(url.user)) throw new OpsError('config', `DATABASE_URL names role "${url.user}": lowercase letters, digits and _ are required`)
  if (!url.password) throw new OpsError('config', `DATABASE_URL gives role "${url.user}" no password`)
  return { user: url.user, password: url.password }
}

/**
 * The role, created when missing, with exactly these attributes. The password goes as a SCRAM
 * verifier (RFC 5803), so the plain password is never in an argv or the server's log.
 */
export function roleSql(role: AppRole): string {
  const name = quoteIdent(role.user)
  return doBlock(
    `IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${quoteLiteral(role.user)}) THEN CREATE ROLE ${name}; END IF; ` +
      `ALTER ROLE ${name} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD ${quoteLiteral(scramVerifier(role.password))};`,
  )
}

/**
 * Run in the application's database: it, its schemas and every table, view, sequence, routine and
 * type in them owned by `user`. Sequences of a column follow their table; objects of an extension
 * stay with it. Idempotent: an object the role owns already is left alone.
 */
export function ownershipSql(user: string): string {
  const role = quoteLiteral(user)
  const mine = `${role}::regrole`
  const userSchema = `n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'`
  const notExtension = (catalog: string, oid: string, extra = '') =>
    `NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = '${catalog}'::regclass AND d.objid = ${oid} AND d.deptype IN ('e'${extra}))`
  return doBlock(`DECLARE r record; BEGIN
    EXECUTE format('ALTER DATABASE %I OWNER TO %I', current_database(), ${role});
    FOR r IN SELECT n.nspname FROM pg_namespace n WHERE ${userSchema} AND pg_get_userbyid(n.nspowner) NOT IN (${role}, 'pg_database_owner') AND ${notExtension('pg_namespace', 'n.oid')} LOOP
      EXECUTE format('ALTER SCHEMA %I OWNER TO %I', r.nspname, ${role});
    END LOOP;
    FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE ${userSchema} AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND c.relowner <> ${mine} AND ${notExtension('pg_class', 'c.oid', ", 'a', 'i'")} LOOP
      EXECUTE format('ALTER %s %s OWNER TO %I', CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, r.name, ${role});
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE ${userSchema} AND p.proowner <> ${mine} AND ${notExtension('pg_proc', 'p.oid')} LOOP
      EXECUTE format('ALTER ROUTINE %s OWNER TO %I', r.name, ${role});
    END LOOP;
    FOR r IN SELECT t.oid::regtype AS name, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE ${userSchema} AND t.typowner <> ${mine} AND ${notExtension('pg_type', 't.oid')}
        AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')) LOOP
      EXECUTE format('ALTER %s %s OWNER TO %I', CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.name, ${role});
    END LOOP;
  END;`)
}

/** RFC 5803's SCRAM-SHA-256 verifier, as PostgreSQL stores it (4096 iterations, its default). */
export function scramVerifier(password: string, salt = crypto.randomBytes(16)): string {
  const iterations = 4096
  const salted = crypto.pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256')
  const clientKey = crypto.createHmac('sha256', salted).update('Client Key').digest()
  const storedKey = crypto.createHash('sha256').update(clientKey).digest()
  const serverKey = crypto.createHmac('sha256', salted).update('Server Key').digest()
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`
}

/** `database` (the live one, or a restored copy before it is swapped in) handed to the bot's role. */
export async function ensureAppRole(ctx: Context, role: AppRole, database: string): Promise<void> {
  if (ctx.db.mode !== 'compose') return
  await psql(ctx.db, ctx.db.maintenanceDb, roleSql(role))
  await psql(ctx.db, database, ownershipSql(role.user))
}

/**
 * After a restore: the copy's objects were created by the superuser (dumps carry no owner); the
 * bot must own them again, or it could not write after the swap.
 */
export async function handRestoredCopyToApp(ctx: Context, database: string): Promise<void> {
  const role = appRoleOf(currentDatabaseUrl(ctx), ctx.cfg.POSTGRES_USER)
  if (!role || ctx.db.mode !== 'compose') return
  log.info(`Handing the restored copy to the application's role ${role.user}`)
  await ensureAppRole(ctx, role, database)
}

/**
 * Deploy's and setup's step: the bot's role exists, has DATABASE_URL's password and owns the
 * application's database. A bot that still connects as POSTGRES_USER (a droplet set up before
 * this step) is moved to a new role, APP_ROLE, with a generated password written to DATABASE_URL
 * in .env.production; the containers get it when compose next recreates them (this deploy).
 */
export async function prepareAppRole(ctx: Context): Promise<void> {
  if (ctx.cfg.DB_MODE !== 'compose') return
  const url = currentDatabaseUrl(ctx)
  if (!url || parseDatabaseUrl(url).host !== 'postgres') return
  const role = appRoleOf(url, ctx.cfg.POSTGRES_USER) ?? (await moveBotOffSuperuser(ctx, url))
  if (!role) return
  log.info(`Database role for the bot: ${role.user} (owner of ${ctx.db.database}, not a superuser)`)
  await ensureAppRole(ctx, role, ctx.db.database)
}

async function moveBotOffSuperuser(ctx: Context, url: string): Promise<AppRole | null> {
  const user = ctx.cfg.POSTGRES_USER === APP_ROLE ? `${APP_ROLE}_app` : APP_ROLE
  if (isDryRun()) {
    log.info(`[dry-run] would move the bot off the superuser ${ctx.cfg.POSTGRES_USER} to a role ${user} of its own (DATABASE_URL in ${ctx.cfg.envFile})`)
    return null
  }
  log.info(`The bot connects as the superuser ${ctx.cfg.POSTGRES_USER}; moving it to a role of its own, ${user}`)
  const role = { user, password: crypto.randomBytes(30).toString('base64url').replace(/[-_]/g, '').slice(0, 32) }
  addSecret(role.password)
  // The role first: a crash before the file is written leaves the bot on the superuser, and the
  // next run sets a new password.
  await ensureAppRole(ctx, role, ctx.db.database)
  const moved = new URL(url)
  moved.username = role.user
  moved.password = role.password
  setEnvValue(ctx.cfg.envFile, 'DATABASE_URL', moved.toString())
  writeContainerEnvFiles(ctx.cfg.envFile, process.env, ctx.cfg.PITR_ENABLED)
  log.info(`DATABASE_URL in ${ctx.cfg.envFile} now names ${role.user}; the bot gets it when its container is next created`)
  return role
}

/** DATABASE_URL as the file says now (a deploy's earlier step may have rewritten it), else as configured. */
function currentDatabaseUrl(ctx: Context): string | undefined {
  return process.env.DATABASE_URL || readEnvFile(ctx.cfg.envFile)?.DATABASE_URL || ctx.cfg.DATABASE_URL
}
