import { composeProject, type ComposeProject } from './compose.ts'
import { loadConfig, type Config } from './config.ts'
import { OpsError } from './errors.ts'
import { dbFromConfig, type Db } from './postgres.ts'

export interface Context {
  cfg: Config
  db: Db
  /** null when neither the database nor any application service lives in compose */
  compose: ComposeProject | null
}

export async function openContext(env: NodeJS.ProcessEnv = process.env): Promise<Context> {
  const cfg = loadConfig(env)
  const needsCompose = cfg.DB_MODE === 'compose' || cfg.APP_SERVICES.length > 0
  const compose = needsCompose ? await composeProject(cfg) : null
  return { cfg, db: dbFromConfig(cfg, compose), compose }
}

/** The compose project, for steps that only exist when services run in compose. */
export function requireCompose(ctx: Context): ComposeProject {
  if (!ctx.compose) throw new OpsError('config', 'No compose project is configured (DB_MODE=url and APP_SERVICES empty), but this step needs the stack')
  return ctx.compose
}
