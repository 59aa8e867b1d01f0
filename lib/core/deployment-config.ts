import { OpsError, messageOf } from './errors.ts'
import { parseDatabaseUrl, PLAIN_IDENTIFIER } from './database-url.ts'

// The data model's Deployment Configuration (.env.production): its validation rules, and the file
// rendered from deployment/.env.production.template. setup-droplet writes the file; a deploy can
// check it with the same rules before services start. RULES is the one place a variable's value
// rule is written: lib/core/config.ts checks the variables it reads with the same functions.
export type Mode = 'polling' | 'webhook'

export const LOG_LEVELS = ['DEBUG', 'INFO', 'WARNING', 'ERROR'] as const

/** A value docker compose reads back exactly: no quotes, spaces, `$` (compose expands it), `#`. */
const PLAIN_VALUE = /^[^\s'"`$#\\]*$/

/** Command lines only the toolkit reads (never compose): spaces are their point. */
const COMMAND_KEYS = new Set(['MIGRATE_COMMAND'])

const IPV4 = /^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)$/
const IPV4_CIDR = /^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)\/(8|9|[12]\d|30)$/

/** null when the value is acceptable, else what is wrong with it (never the value itself). */
export type Rule = (value: string) => string | null

const trueOrFalse: Rule = (v) => (v === 'true' || v === 'false' ? null : 'must be true or false')

export const RULES = {
  TELEGRAM_BOT_TOKEN: (v) => (/^\d+:[A-Za-z0-9_-]+$/.test(v) ? null : 'must look like 123456789:AAH... (digits, a colon, then letters, digits, _ or -)'),
  TELEGRAM_WEBHOOK_URL: (v) => httpsUrl(v),
  TELEGRAM_WEBHOOK_SECRET: (v) => (/^[A-Za-z0-9_-]{1,256}$/.test(v) ? null : 'letters, digits, _ and - only (Telegram\'s alphabet for secret_token)'),
  POSTGRES_DB: (v) => (PLAIN_IDENTIFIER.test(v) ? null : 'must be a plain identifier (letters, digits, _)'),
  POSTGRES_USER: (v) => (/^[A-Za-z0-9_.-]+$/.test(v) ? null : 'must be letters, digits, . - _ only'),
  POSTGRES_PASSWORD: (v) => (/^[A-Za-z0-9]{12,128}$/.test(v) ? null : 'at least 12 letters and digits, nothing else (it also appears inside DATABASE_URL)'),
  DATABASE_URL: (v) => {
    try {
      parseDatabaseUrl(v)
      return null
    } catch (error) {
      return messageOf(error).replace(/^DATABASE_URL /, '')
    }
  },
  STRIPE_API_KEY: (v) => (/^(sk|rk)_(live|test)_[A-Za-z0-9_]+$/.test(v) ? null : 'must look like sk_live_... or sk_test_... (or a restricted rk_ key)'),
  DOMAIN: (v) => (/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z][a-z0-9-]{0,62}$/i.test(v) ? null : 'must be a host name such as bot.example.com'),
  LOG_LEVEL: (v) => ((LOG_LEVELS as readonly string[]).includes(v) ? null : `must be one of ${LOG_LEVELS.join(', ')}`),
  PITR_ENABLED: trueOrFalse,
  APP_VERSION: (v) => (/^v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$/.test(v) || /^[0-9a-f]{7,40}$/.test(v) ? null : 'must be a release tag such as v1.2.0 or a git SHA'),
  BOT_IMAGE: (v) => (/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::\d+)?(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/.test(v) ? null : 'must be an image repository without a tag, such as registry.example.com/team/bot'),
  // the opt-in monitoring stack (deployment/monitoring; setup-droplet --monitoring writes these)
  MONITORING_ENABLED: trueOrFalse,
  // parsed too: the pattern alone lets through what no client can reach (http://:9093)
  ALERTMANAGER_URL: (v) => (/^https?:\/\/[^\s/]+(\/\S*)?$/.test(v) && URL.canParse(v) ? null : 'must be an http(s) URL such as http://127.0.0.1:9093'),
  ALERTMANAGER_SECRETS_DIR: (v) => (v.startsWith('/') ? null : 'must be an absolute path (compose would resolve a relative one from the toolkit checkout)'),
  MONITORING_SUBNET: (v) => (IPV4_CIDR.test(v) ? null : 'must be an IPv4 network such as 172.30.77.0/24'),
  NODE_EXPORTER_HOST: (v) => (IPV4.test(v) ? null : "must be an IPv4 address: the host's address on the monitoring network, such as 172.30.77.1"),
} satisfies Record<string, Rule>

/** The rule for a key of the file, if the data model gives it one. */
function ruleFor(key: string): Rule | undefined {
  return (RULES as Record<string, Rule | undefined>)[key]
}

function httpsUrl(value: string): string | null {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return 'must be a URL such as https://bot.example.com/webhook'
  }
  if (url.protocol !== 'https:') return 'must use https:// (Telegram only calls HTTPS webhooks)'
  if (url.username || url.password) return 'must not contain a user or password'
  return null
}

/** The keys a working .env.production must have, for the mode. */
export function requiredKeys(mode: Mode): string[] {
  const always = ['BOT_IMAGE', 'APP_VERSION', 'LOG_LEVEL', 'TELEGRAM_BOT_TOKEN', 'POSTGRES_DB', 'POSTGRES_USER', 'POSTGRES_PASSWORD', 'DATABASE_URL', 'REDIS_URL', 'STRIPE_API_KEY']
  return mode === 'webhook' ? [...always, 'TELEGRAM_WEBHOOK_URL', 'TELEGRAM_WEBHOOK_SECRET', 'DOMAIN'] : always
}

export interface Problem {
  key: string
  message: string
}

/** Every problem at once, so an operator fixes the file in one go. Messages never quote a value. */
export function validateDeploymentConfig(vars: Record<string, string | undefined>, mode: Mode): Problem[] {
  const problems: Problem[] = []
  for (const key of requiredKeys(mode)) {
    const value = vars[key]
    if (!value) problems.push({ key, message: 'is missing' })
    else if (value === 'CHANGE_ME' || value.includes('CHANGE_ME')) problems.push({ key, message: 'still says CHANGE_ME' })
  }
  for (const [key, value] of Object.entries(vars)) {
    if (value === undefined || value === '' || problems.some((p) => p.key === key)) continue
    const wrong = !PLAIN_VALUE.test(value) && !COMMAND_KEYS.has(key) ? 'must not contain spaces, quotes, $, # or backslashes' : ruleFor(key)?.(value)
    if (wrong) problems.push({ key, message: wrong })
  }
  if (mode === 'polling' && vars.TELEGRAM_WEBHOOK_URL) problems.push({ key: 'TELEGRAM_WEBHOOK_URL', message: 'must be empty in polling mode' })
  if (!problems.some((p) => p.key === 'DATABASE_URL' || p.key === 'POSTGRES_PASSWORD')) problems.push(...databaseUrlConsistency(vars))
  return problems
}

// A URL pointing at the compose service as POSTGRES_USER (a droplet whose bot is not yet on a role
// of its own) must repeat its password, or the bot could not log in. The bot's own role has its
// own password, which the toolkit sets from this URL (lib/db/app-role.ts).
function databaseUrlConsistency(vars: Record<string, string | undefined>): Problem[] {
  const url = vars.DATABASE_URL
  if (!url || !vars.POSTGRES_PASSWORD || RULES.DATABASE_URL(url)) return []
  const db = parseDatabaseUrl(url)
  if (db.host !== 'postgres') return []
  const wrong: string[] = []
  const superuser = !vars.POSTGRES_USER || db.user === vars.POSTGRES_USER
  if (superuser && db.password !== vars.POSTGRES_PASSWORD) wrong.push('POSTGRES_PASSWORD')
  if (vars.POSTGRES_DB && db.database !== vars.POSTGRES_DB) wrong.push('POSTGRES_DB')
  return wrong.length ? [{ key: 'DATABASE_URL', message: `does not match ${wrong.join(', ')} (it points at the compose service "postgres")` }] : []
}

export function describeProblems(file: string, problems: Problem[]): string {
  return `${file}: ${problems.map((p) => `${p.key} ${p.message}`).join('; ')}`
}

export function assertValid(file: string, vars: Record<string, string | undefined>, mode: Mode): void {
  const problems = validateDeploymentConfig(vars, mode)
  if (problems.length) throw new OpsError('config', describeProblems(file, problems))
}

/** The compose service's URL, consistent with the password by construction. */
export function composeDatabaseUrl(user: string, password: string, database: string): string {
  return `postgresql://${user}:${password}@postgres:5432/${database}`
}

/** The keys of the template's commented-out overrides (`# POSTGRES_IMAGE=postgres:15`). */
export function optionalKeys(template: string): string[] {
  return [...template.matchAll(/^#\s*([A-Z][A-Z0-9_]*)=\S*$/gm)].map((m) => m[1]!)
}

export function templateKeys(template: string): string[] {
  return [...template.matchAll(/^([A-Z][A-Z0-9_]*)=/gm)].map((m) => m[1]!)
}

/**
 * The template with its values filled in: `KEY=...` lines take the given value, a commented
 * override (`# KEY=default`) becomes `KEY=value` when one is given, comments stay; values the
 * template does not name are appended at the end.
 */
export function renderEnvFile(template: string, values: Record<string, string>, header: string): string {
  const used = new Set<string>()
  const lines = template.split('\n').map((line) => {
    const set = /^([A-Z][A-Z0-9_]*)=/.exec(line)
    const optional = /^#\s*([A-Z][A-Z0-9_]*)=\S*$/.exec(line)
    const key = set?.[1] ?? optional?.[1]
    if (!key || values[key] === undefined) return line
    used.add(key)
    return `${key}=${values[key]}`
  })
  const extra = Object.keys(values).filter((k) => !used.has(k))
  if (extra.length) lines.push('', '# --- Set by setup-droplet ------------------------------------------------------', ...extra.map((k) => `${k}=${values[k]}`), '')
  return [header, ...lines].join('\n').replace(/\n*$/, '\n')
}
