import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomic } from './atomic-file.ts'
import { parseEnvFile } from './env-file.ts'
import { log } from './log.ts'
import { isDryRun } from './shell.ts'

// .env.production holds the application's variables and the toolkit's own (bucket keys, the PITR
// cipher password, notify and alert URLs, the database superuser's password). Each container gets
// only its share, through a file derived from it before every compose command the toolkit runs:
//   - the bot: every variable except the toolkit's, so a new application variable needs no listing;
//   - postgres: the off-site bucket settings pgBackRest's repo2 needs, and only with PITR on.
// A denylist for the bot (the toolkit knows its own names; it cannot know the application's).

/** Prefixes of variables only the toolkit (or compose interpolation, or setup) reads. */
export const TOOLKIT_PREFIXES = [
  'OFFSITE_', 'BACKUP_', 'PITR_', 'ALERTMANAGER_', 'ALERT_', 'PROMETHEUS_', 'GRAFANA_', 'MONITORING_', 'NODE_EXPORTER_',
  'POSTGRES_EXPORTER_', 'REDIS_EXPORTER_', 'NGINX_', 'NOTIFY_', 'TELEGRAM_NOTIFY_', 'COMPOSE_', 'DOCKER_', 'SETUP_',
  'HEALTH_CHECK_', 'DB_', 'PG_', 'WATCH_',
] as const

/** Single names of the toolkit's, and the database superuser's password (the bot has DATABASE_URL). */
export const TOOLKIT_NAMES = new Set([
  'DEPLOY_DIR', 'ENV_FILE', 'LOG_FILE', 'MIN_FREE_DISK_MB', 'KEY_TABLES', 'APP_SERVICES', 'APP_DIR', 'BOT_IMAGE',
  'ARTIFACTS_FILE', 'AUDIT_LOG', 'MIGRATE_COMMAND', 'STOP_TIMEOUT', 'TRIGGERED_BY', 'METRICS_DIR', 'POSTGRES_PASSWORD',
  'POSTGRES_IMAGE', 'REDIS_IMAGE', 'POSTGRES_MEM_LIMIT', 'REDIS_MEM_LIMIT', 'BOT_MEM_LIMIT', 'LETSENCRYPT_DIR', 'CERTBOT_WEBROOT',
  'KEEP_RELEASES', 'RELEASE_RETENTION_DAYS', 'ORCHESTRATOR',
])

/**
 * Variables both read: the application's own, which the toolkit also uses (the bot token for
 * notifications, the webhook settings, the database's name). A unit test checks that every
 * variable the toolkit knows is in exactly one of the two lists.
 */
export const SHARED_WITH_BOT = new Set([
  'ENVIRONMENT', 'LOG_LEVEL', 'APP_VERSION', 'TELEGRAM_BOT_TOKEN', 'TELEGRAM_WEBHOOK_URL', 'TELEGRAM_WEBHOOK_SECRET',
  'TELEGRAM_API_BASE', 'DATABASE_URL', 'POSTGRES_DB', 'POSTGRES_USER', 'REDIS_URL', 'STRIPE_API_KEY', 'DOMAIN',
])

export function isToolkitVariable(name: string): boolean {
  return TOOLKIT_NAMES.has(name) || TOOLKIT_PREFIXES.some((prefix) => name.startsWith(prefix))
}

/** What pgBackRest's repo2 reads in the postgres container (deployment/postgres/pitr-entrypoint.sh). */
export const POSTGRES_BUCKET_VARIABLES = [
  'PITR_CIPHER_PASSWORD', 'OFFSITE_S3_BUCKET', 'OFFSITE_S3_ENDPOINT', 'OFFSITE_S3_REGION', 'OFFSITE_S3_PREFIX',
  'OFFSITE_S3_ACCESS_KEY_ID', 'OFFSITE_S3_SECRET_ACCESS_KEY',
] as const

/**
 * The bot's env_file: the lines of .env.production whose variable is not the toolkit's, exactly as
 * written (compose parses them as it parsed the original); comments and anything else dropped.
 */
export function botEnvText(envText: string): string {
  const kept = envText.split(/\r?\n/).filter((raw) => {
    const name = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=/.exec(raw)?.[1]
    return name !== undefined && !isToolkitVariable(name)
  })
  return `${HEADER}${kept.map((line) => `${line.trim()}\n`).join('')}`
}

/**
 * The postgres service's env_file: with PITR on, the bucket settings set (the process environment
 * over the file, as compose interpolates); with PITR off, nothing. Empty values are left out, so
 * the entrypoint's defaults (OFFSITE_S3_PREFIX) apply as before.
 */
export function postgresEnvText(fileVars: Record<string, string>, env: NodeJS.ProcessEnv, pitrEnabled: boolean): string {
  if (!pitrEnabled) return HEADER
  const lines = POSTGRES_BUCKET_VARIABLES.flatMap((name) => {
    const value = env[name] || fileVars[name]
    return value ? [`${name}=${value}\n`] : []
  })
  return `${HEADER}${lines.join('')}`
}

const HEADER = '# Derived from .env.production by the toolkit (lib/core/container-env.ts) before every compose command; edit that file, not this one.\n'

/** Next to .env.production: compose's defaults (../../.env.bot) find them there on a droplet. */
export function botEnvFile(envFile: string): string {
  return path.join(path.dirname(envFile), '.env.bot')
}

export function postgresEnvFile(envFile: string): string {
  return path.join(path.dirname(envFile), '.env.postgres')
}

/**
 * Writes both derived files (mode 600, atomically, owned as .env.production is) when their content
 * changed. Compose recreates a container whose environment changed at its next `up`, so an edit of
 * .env.production reaches the containers as it always did: at the next deploy or `stack up`.
 */
export function writeContainerEnvFiles(envFile: string, env: NodeJS.ProcessEnv, pitrEnabled: boolean): void {
  const text = readOrNull(envFile)
  // none yet (a dry run of setup on a fresh host): compose says which file it misses
  if (text === null) return
  const source = fs.statSync(envFile)
  writeDerived(botEnvFile(envFile), botEnvText(text), source)
  writeDerived(postgresEnvFile(envFile), postgresEnvText(parseEnvFile(text), env, pitrEnabled), source)
}

function writeDerived(file: string, content: string, owner: fs.Stats): void {
  const current = readOrNull(file)
  if (current === content) return
  if (isDryRun()) {
    log.info(`[dry-run] would write ${file} (derived from .env.production)`)
    return
  }
  writeFileAtomic(file, content, 0o600)
  // A new file written by root: the deploy user's compose commands read it too.
  if (current === null && process.getuid?.() === 0) fs.lchownSync(file, owner.uid, owner.gid)
}

function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw error
  }
}
