import { composeProject, type ComposeProject } from '../commands/compose.ts'
import { dbFromConfig, type Db } from '../commands/postgres.ts'
import { loadConfig, type Config } from '../core/config.ts'
import { writeContainerEnvFiles } from '../core/container-env.ts'
import { OpsError } from '../core/errors.ts'

// What a script works on: its configuration, and the compose project and database its commands
// are built for (lib/commands). lib/core/config.ts only reads and validates the settings.

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
