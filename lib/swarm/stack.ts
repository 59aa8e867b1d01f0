import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomic } from '../core/atomic-file.ts'
import { TOOLKIT_DIR, type Config } from '../core/config.ts'
import { type Context } from '../stack/context.ts'
import { botEnvText } from '../core/container-env.ts'
import { readEnvFile } from '../core/env-file.ts'
import { OpsError } from '../core/errors.ts'
import { $ } from '../core/shell.ts'
import { requireImage } from '../release/release.ts'
import { localSwarm } from './cluster.ts'

// The stack on a Docker Swarm (ORCHESTRATOR=swarm): deployment/docker-stack.yml, deployed by
// `docker stack deploy` under COMPOSE_PROJECT_NAME from the manager this toolkit runs on.

export const STACK_FILE = path.join(TOOLKIT_DIR, 'deployment', 'docker-stack.yml')

/** The stack's secrets: kept out of the bot's env file and of the service spec. */
const SECRET_VARIABLES = { telegram_bot_token: 'TELEGRAM_BOT_TOKEN', database_url: 'DATABASE_URL' } as const

/**
 * Whether this run drives the Swarm stack: ORCHESTRATOR=swarm, or auto on a host that is a Swarm
 * manager (an engine that is not one, or no engine, is the one-host case as before).
 */
export async function usesSwarm(cfg: Config): Promise<boolean> {
  if (cfg.ORCHESTRATOR !== 'auto') return cfg.ORCHESTRATOR === 'swarm'
  if (!fs.existsSync(STACK_FILE)) return false
  return (await localSwarm().catch(() => null))?.manager === true
}

export function stackName(cfg: Config): string {
  return cfg.COMPOSE_PROJECT_NAME
}

export function serviceName(cfg: Config, service: string): string {
  return `${stackName(cfg)}_${service}`
}

/** The stack's network, where the one-off migration task runs. */
export function stackNetwork(cfg: Config): string {
  return `${stackName(cfg)}_backend`
}

export function isWebhook(cfg: Config): boolean {
  return cfg.webhookUrl !== ''
}

/** Where the derived files live: beside .env.production, owned by the deploy user, mode 600. */
function swarmDir(cfg: Config): string {
  return path.join(path.dirname(cfg.envFile), '.swarm')
}

/**
 * Writes what the stack file reads besides .env.production: the bot's env file without its
 * secrets, and one file a secret. Returns the variables `docker stack deploy` interpolates.
 */
export interface StackFiles {
  SWARM_BOT_ENV_FILE: string
  SWARM_SECRETS_DIR: string
  SWARM_SECRETS_VERSION: string
  SWARM_CONFIGS_VERSION: string
}

export function writeStackFiles(cfg: Config): StackFiles {
  const envText = fs.readFileSync(cfg.envFile, 'utf8')
  const vars = readEnvFile(cfg.envFile) ?? {}
  const dir = swarmDir(cfg)
  fs.mkdirSync(path.join(dir, 'secrets'), { recursive: true, mode: 0o700 })
  const secretNames = new Set<string>(Object.values(SECRET_VARIABLES))
  const botEnv = botEnvText(envText).split('\n').filter((line) => !secretNames.has(/^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=/.exec(line)?.[1] ?? '')).join('\n')
  writeFileAtomic(path.join(dir, 'bot.env'), botEnv)
  const secrets = crypto.createHash('sha256')
  for (const [file, variable] of Object.entries(SECRET_VARIABLES)) {
    const value = process.env[variable] || vars[variable] || ''
    if (!value) throw new OpsError('config', `${variable} is empty in ${cfg.envFile}: the Swarm stack gets it as a secret`)
    writeFileAtomic(path.join(dir, 'secrets', file), value)
    secrets.update(`${file}=${value}\n`)
  }
  const configs = crypto.createHash('sha256')
  for (const file of ['nginx/nginx.conf', 'nginx/ssl.conf.template', 'redis/redis.conf', 'swarm/bot-entrypoint.sh']) configs.update(fs.readFileSync(path.join(TOOLKIT_DIR, 'deployment', file)))
  return {
    SWARM_BOT_ENV_FILE: path.join(dir, 'bot.env'),
    SWARM_SECRETS_DIR: path.join(dir, 'secrets'),
    // Secrets and configs cannot change in place: a new content is a new name.
    SWARM_SECRETS_VERSION: secrets.digest('hex').slice(0, 12),
    SWARM_CONFIGS_VERSION: configs.digest('hex').slice(0, 12),
  }
}

/** The mode decides the update order and the replicas: Telegram allows one poller. */
function modeVariables(cfg: Config, vars: Record<string, string>): Record<string, string> {
  if (!isWebhook(cfg)) return { BOT_UPDATE_ORDER: 'stop-first', BOT_REPLICAS: '1', NGINX_REPLICAS: '0', BOT_DRAIN_SECONDS: '0' }
  // A stopping task serves on until nginx's cached addresses (5 s) no longer name it.
  return { BOT_UPDATE_ORDER: 'start-first', BOT_REPLICAS: process.env.BOT_REPLICAS || vars.BOT_REPLICAS || '2', NGINX_REPLICAS: '1', BOT_DRAIN_SECONDS: '6' }
}

/**
 * What `docker stack deploy` interpolates the stack file with: .env.production (the calling
 * environment wins, as with compose) and what writeStackFiles derived.
 */
export function stackDeployEnv(ctx: Context, tag: string): Record<string, string> {
  const { cfg } = ctx
  const vars = readEnvFile(cfg.envFile) ?? {}
  const fromFile = Object.fromEntries(Object.entries(vars).filter(([k]) => !process.env[k]))
  return { ...fromFile, ...writeStackFiles(cfg), ...modeVariables(cfg, vars), BOT_IMAGE: requireImage(cfg), APP_VERSION: tag, COMPOSE_PROJECT_NAME: stackName(cfg), TELEGRAM_WEBHOOK_URL: cfg.webhookUrl }
}

/** Always detached: the caller waits for the update (service.ts). */
export async function deployStack(ctx: Context, tag: string): Promise<void> {
  await $({ cwd: path.dirname(STACK_FILE), env: stackDeployEnv(ctx, tag), timeoutMs: 120_000 })`docker stack deploy --with-registry-auth --compose-file ${STACK_FILE} ${stackName(ctx.cfg)}`
}
