import { OpsError } from './errors.ts'

// DATABASE_URL, read as libpq would: the password travels in PGPASSWORD and the parameters in
// their PG* variables (lib/commands/postgres.ts), never in argv. Both configuration checks use it.
export interface DatabaseUrl {
  mode: 'url'
  host: string
  port: string
  user: string
  password: string
  database: string
  /** PG* environment variables from the URL's query (sslmode -> PGSSLMODE, ...) */
  params: Record<string, string>
}

/** A database name the scripts pass to psql and put in SQL: letters, digits and _ (at most 63). */
export const PLAIN_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/

const URL_PARAMS: Record<string, string> = {
  sslmode: 'PGSSLMODE',
  sslrootcert: 'PGSSLROOTCERT',
  sslcert: 'PGSSLCERT',
  sslkey: 'PGSSLKEY',
  application_name: 'PGAPPNAME',
}

export function parseDatabaseUrl(text: string): DatabaseUrl {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    throw new OpsError('config', 'DATABASE_URL is not a valid URL (expected postgresql://user:password@host:5432/dbname)')
  }
  if (!/^postgres(ql)?:$/.test(url.protocol)) throw new OpsError('config', `DATABASE_URL must start with postgresql://, not ${url.protocol}//`)
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''))
  if (!PLAIN_IDENTIFIER.test(database)) throw new OpsError('config', `DATABASE_URL names database "${database}": a plain identifier is required`)
  if (!url.hostname || !url.username) throw new OpsError('config', 'DATABASE_URL needs a host and a user')
  const params: Record<string, string> = {}
  for (const [key, value] of url.searchParams) {
    const envName = URL_PARAMS[key]
    if (!envName) throw new OpsError('config', `DATABASE_URL parameter "${key}" is not supported (supported: ${Object.keys(URL_PARAMS).join(', ')})`)
    params[envName] = value
  }
  return {
    mode: 'url',
    host: url.hostname.replace(/^\[|\]$/g, ''),
    port: url.port || '5432',
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password),
    database,
    params,
  }
}
