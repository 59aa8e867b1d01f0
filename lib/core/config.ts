import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { z } from 'zod'
import { composeProject, type ComposeProject } from '../commands/compose.ts'
import { dbFromConfig, type Db } from '../commands/postgres.ts'
import { readEnvFile } from './env-file.ts'
import { OpsError } from './errors.ts'
import { addSecretsFrom } from './redact.ts'
import { writeContainerEnvFiles } from './container-env.ts'
import { OFFSITE_VARIABLES, offsiteSettings, type OffsiteSettings } from '../offsite/settings.ts'

export const TOOLKIT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')

const identifier = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,62}$/, 'must be a plain identifier (letters, digits, _)')
const seconds = z.coerce.number().int().positive()
const absolutePath = z.string().refine((p) => path.isAbsolute(p), 'must be an absolute path')
const list = z
  .string()
  .transform((s) => s.split(/[\s,]+/).filter(Boolean))

// Every variable the contract and the issues name, with its default. Values also come from
// .env.production (ENV_FILE) for the database settings compose itself reads from that file.
const schema = z.object({
  DEPLOY_DIR: absolutePath.default('/opt/toogoodtogo'),
  BACKUP_DIR: absolutePath.default('/opt/backups/postgres'),
  DOCKER_COMPOSE_FILE: z.string().min(1).default('docker-compose.prod.yml'),
  COMPOSE_PROJECT_NAME: z.string().regex(/^[a-z0-9][a-z0-9_-]*$/, 'lowercase letters, digits, - and _').default('toogoodtogo'),
  ENV_FILE: z.string().optional(),
  COMPOSE_CLI: z.enum(['auto', 'v2', 'v1']).default('auto'),
  /** swarm: deploy, rollback and the watch drive deployment/docker-stack.yml on a Docker Swarm (lib/swarm); auto: swarm when this host is a Swarm manager */
  ORCHESTRATOR: z.enum(['auto', 'compose', 'swarm']).default('auto'),
  HEALTH_CHECK_TIMEOUT: seconds.default(120),
  LOG_FILE: z.string().default('/var/log/toogoodtogo/deployment.log'),
  MIN_FREE_DISK_MB: z.coerce.number().int().nonnegative().default(2048),
  BACKUP_RETENTION_COUNT: z.coerce.number().int().min(1).default(7),
  BACKUP_RETENTION_DAYS: z.coerce.number().int().min(1).default(7),
  DB_OPERATION_TIMEOUT: seconds.default(600),
  DB_MODE: z.enum(['compose', 'url']).default('compose'),
  DATABASE_URL: z.string().optional(),
  POSTGRES_DB: identifier.default('toogoodtogo'),
  POSTGRES_USER: z.string().regex(/^[A-Za-z0-9_.-]+$/, 'letters, digits, . - _').default('postgres'),
  PG_MAINTENANCE_DB: identifier.default('postgres'),
  KEY_TABLES: list.default([]),
  APP_SERVICES: list.default(['bot']),
  // deploy and rollback
  APP_DIR: absolutePath.optional(),
  BOT_IMAGE: z.string().regex(/^[a-z0-9][a-z0-9._\/:-]*$/, 'an image repository such as registry.example.com/toogoodtogo/bot').optional(),
  ARTIFACTS_FILE: absolutePath.optional(),
  AUDIT_LOG: absolutePath.optional(),
  MIGRATE_COMMAND: z.string().min(1).default('alembic upgrade head'),
  /** seconds after a switch in which a release that turns unhealthy is rolled back by itself; 0: no watch */
  WATCH_SECONDS: z.coerce.number().int().nonnegative().default(300),
  /** seconds the bot gets to finish in-flight updates when it is stopped (compose's stop_grace_period) */
  STOP_TIMEOUT: seconds.default(20),
  /** release images kept after a deploy besides the running and previous ones (lib/release/prune.ts) */
  KEEP_RELEASES: z.coerce.number().int().min(1, 'at least 1').default(3),
  /** days a release's image is kept after it was last used, whatever KEEP_RELEASES says (the data model's 30) */
  RELEASE_RETENTION_DAYS: z.coerce.number().int().nonnegative().default(30),
  COMPOSE_PROFILES: z.string().optional(),
  TRIGGERED_BY: z.enum(['manual', 'automated', 'github_action']).default('manual'),
  NOTIFY_WEBHOOK_URL: z.url().optional(),
  TELEGRAM_NOTIFY_CHAT_ID: z.string().regex(/^-?\d+$|^@\w+$/, 'a numeric chat id or @channel').optional(),
  TELEGRAM_BOT_TOKEN: z.string().optional(),
  TELEGRAM_API_BASE: z.url().default('https://api.telegram.org'),
  // node_exporter's textfile collector directory (Debian's prometheus-node-exporter default)
  METRICS_DIR: absolutePath.default('/var/lib/prometheus/node-exporter'),
  // point-in-time recovery (README): the postgres service archives WAL through pgBackRest
  POSTGRES_IMAGE: z.string().regex(/^[a-z0-9][a-z0-9._\/:-]*$/, 'an image such as postgres:15').default('postgres:15'),
  PITR_ENABLED: z.enum(['true', 'false'], 'true or false').default('false').transform((v) => v === 'true'),
  PITR_ARCHIVE_TIMEOUT: seconds.default(60),
  PITR_REPO_DIR: absolutePath.optional(),
  PITR_CIPHER_PASSWORD: z.string().min(20, 'at least 20 characters').optional(),
  /** seconds a restored server gets to replay the archive up to its target */
  PITR_RECOVERY_TIMEOUT: seconds.default(3600),
  // monitoring profile: status.sh lists firing alerts from it (Alertmanager's port on the droplet's
  // 127.0.0.1; setup-droplet --monitoring writes it to .env.production)
  ALERTMANAGER_URL: z.url().optional(),
  /** the opt-in monitoring stack (deployment/monitoring): every compose command includes its file and profile */
  MONITORING_ENABLED: z.enum(['true', 'false'], 'true or false').default('false').transform((v) => v === 'true'),
})

/** Every variable the configuration reads (lib/core/container-env.ts keeps them from the bot). */
export const CONFIG_KEYS = Object.keys(schema.shape)

type Parsed = z.infer<typeof schema>
export type Config = Omit<Parsed, 'APP_DIR' | 'ARTIFACTS_FILE' | 'AUDIT_LOG'> & {
  envFile: string
  /** the production compose file, the base every other -f file's relative paths resolve from */
  composeFile: string
  /** every -f file of the stack: the production file, then the monitoring file when it is on */
  composeFiles: [string, ...string[]]
  /** the profiles every compose command enables (stackProfiles) */
  composeProfiles: string[]
  /** TELEGRAM_WEBHOOK_URL from the environment, else from the env file; '' in polling mode */
  webhookUrl: string
  /** TELEGRAM_WEBHOOK_SECRET, looked up as webhookUrl is (and as compose interpolates it for nginx) */
  webhookSecret: string
  APP_DIR: string
  ARTIFACTS_FILE: string
  /** where artifacts.json lived before it moved out of the (root-owned) toolkit checkout */
  legacyArtifactsFile: string
  AUDIT_LOG: string
  /** encrypted off-site copies (OFFSITE_*, BACKUP_AGE_*); null while OFFSITE_S3_BUCKET is empty */
  offsite: OffsiteSettings | null
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const deployDir = env.DEPLOY_DIR || '/opt/toogoodtogo'
  const envFile = env.ENV_FILE || path.join(deployDir, '.env.production')
  const fileVars = readEnvFile(envFile) ?? {}
  addSecretsFrom(fileVars)
  addSecretsFrom(env)
  // The process environment wins over the file: an operator can override one value for one run.
  const merged: Record<string, string | undefined> = { ...pick(fileVars, FILE_KEYS), ...nonEmpty(env) }
  if (env.APP_SERVICES !== undefined) merged.APP_SERVICES = env.APP_SERVICES
  const parsed = schema.safeParse(merged)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    const name = String(issue.path[0] ?? 'configuration')
    throw new OpsError('config', `Invalid ${name}=${JSON.stringify(merged[name] ?? '')}: ${issue.message}`)
  }
  const cfg = parsed.data
  if (cfg.DB_MODE === 'url' && !cfg.DATABASE_URL) throw new OpsError('config', 'DB_MODE=url needs DATABASE_URL')
  const composeFile = path.isAbsolute(cfg.DOCKER_COMPOSE_FILE)
    ? cfg.DOCKER_COMPOSE_FILE
    : path.join(TOOLKIT_DIR, 'deployment', cfg.DOCKER_COMPOSE_FILE)
  const webhookUrl = env.TELEGRAM_WEBHOOK_URL || fileVars.TELEGRAM_WEBHOOK_URL || ''
  const webhookSecret = env.TELEGRAM_WEBHOOK_SECRET || fileVars.TELEGRAM_WEBHOOK_SECRET || ''
  return {
    ...cfg,
    envFile,
    composeFile,
    composeFiles: cfg.MONITORING_ENABLED ? [composeFile, MONITORING_COMPOSE_FILE] : [composeFile],
    composeProfiles: stackProfiles(cfg.COMPOSE_PROFILES, { webhook: Boolean(webhookUrl), monitoring: cfg.MONITORING_ENABLED }),
    webhookUrl,
    webhookSecret,
    APP_DIR: cfg.APP_DIR ?? path.join(cfg.DEPLOY_DIR, 'app'),
    // State lives where the deploy user owns it: DEPLOY_DIR, not the toolkit checkout root cloned.
    ARTIFACTS_FILE: cfg.ARTIFACTS_FILE ?? path.join(cfg.DEPLOY_DIR, 'artifacts.json'),
    legacyArtifactsFile: path.join(cfg.DEPLOY_DIR, 'deployment', 'artifacts.json'),
    AUDIT_LOG: cfg.AUDIT_LOG ?? path.join(path.dirname(cfg.LOG_FILE), 'deployments.log'),
    offsite: offsiteSettings(merged),
  }
}

export const MONITORING_COMPOSE_FILE = path.join(TOOLKIT_DIR, 'deployment', 'monitoring', 'docker-compose.monitoring.yml')

/**
 * The operator's COMPOSE_PROFILES and what the settings imply: webhook mode runs nginx (profile
 * `webhook`), monitoring its stack (and nginx's exporter in webhook mode). Passed as --profile on
 * every compose command, so that `up --remove-orphans` and the stack unit see the same services.
 */
export function stackProfiles(given: string | undefined, implied: { webhook: boolean; monitoring: boolean }): string[] {
  const named = namedProfiles(given)
  const monitoring = implied.monitoring ? ['monitoring', ...(implied.webhook ? ['monitoring-webhook'] : [])] : []
  return [...new Set([...named, ...(implied.webhook ? ['webhook'] : []), ...monitoring])]
}

/** The profiles COMPOSE_PROFILES names (comma-separated, as Compose reads it). */
export function namedProfiles(given: string | undefined): string[] {
  return (given ?? '').split(',').map((s) => s.trim()).filter(Boolean)
}

const FILE_KEYS = ['ORCHESTRATOR', 'MONITORING_ENABLED', 'ALERTMANAGER_URL', 'POSTGRES_DB', 'POSTGRES_USER', 'DATABASE_URL', 'DB_MODE', 'COMPOSE_PROJECT_NAME', 'BOT_IMAGE', 'TELEGRAM_BOT_TOKEN', 'COMPOSE_PROFILES', 'MIGRATE_COMMAND', 'POSTGRES_IMAGE', 'PITR_ENABLED', 'PITR_ARCHIVE_TIMEOUT', 'PITR_REPO_DIR', 'PITR_CIPHER_PASSWORD', 'NOTIFY_WEBHOOK_URL', 'TELEGRAM_NOTIFY_CHAT_ID', 'TELEGRAM_API_BASE', 'KEEP_RELEASES', 'RELEASE_RETENTION_DAYS', ...OFFSITE_VARIABLES]

function pick(vars: Record<string, string>, keys: string[]): Record<string, string> {
  return Object.fromEntries(Object.entries(vars).filter(([k]) => keys.includes(k)))
}

function nonEmpty(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== ''))
}

export interface Context {
  cfg: Config
  db: Db
  /** null when neither the database nor any application service lives in compose */
  compose: ComposeProject | null
}

export async function openContext(env: NodeJS.ProcessEnv = process.env): Promise<Context> {
  const cfg = loadConfig(env)
  // On a Swarm the bot is a service of the stack, not of a compose project (lib/swarm).
  const needsCompose = cfg.DB_MODE === 'compose' || (cfg.APP_SERVICES.length > 0 && cfg.ORCHESTRATOR !== 'swarm')
  const compose = needsCompose ? await composeProject(cfg) : null
  // Before any compose command: the bot's and postgres's env_files are derived from .env.production.
  if (compose?.envFile) writeContainerEnvFiles(compose.envFile, env, cfg.PITR_ENABLED)
  return { cfg, db: dbFromConfig(cfg, compose), compose }
}

/** The compose project, for steps that only exist when services run in compose. */
export function requireCompose(ctx: Context): ComposeProject {
  if (!ctx.compose) throw new OpsError('config', 'No compose project is configured (DB_MODE=url and APP_SERVICES empty), but this step needs the stack')
  return ctx.compose
}
