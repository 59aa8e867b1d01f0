import { composeProject, type ComposeProject } from './compose.ts'
import { loadConfig, type Config } from './config.ts'
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
