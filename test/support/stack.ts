import fs from 'node:fs'
import path from 'node:path'
import { botEnvFile, postgresEnvFile, writeContainerEnvFiles } from '../../lib/core/container-env.ts'
import { pitrRepoDir } from '../../lib/commands/compose.ts'
import { loadConfig } from '../../lib/core/config.ts'
import { parseEnvFile, readEnvFile } from '../../lib/core/env-file.ts'
import { exec, ROOT, runScript, tempDir, type ScriptResult } from './scripts.ts'

export { exec }

// A real compose project per test file, from deployment/docker-compose.prod.yml and the images
// provision.sh pushed to the local registry. Project names start with "ttg" so teardown.sh
// finds leftovers.
export type Flavor = 'v2' | 'v1'

export function bedEnv(): Record<string, string> {
  const file = path.join(ROOT, 'test/e2e/bed/.bed.env')
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: the e2e global setup (provision.sh) did not run`)
  return parseEnvFile(fs.readFileSync(file, 'utf8'))
}

export const DB = { name: 'toogoodtogo', user: 'toogoodtogo', password: 'e2ePassw0rdX' }
export const BOT_TOKEN = '123456:E2E-secret_token'

export interface Stack {
  project: string
  dir: string
  /** the environment the scripts run with against this stack */
  env: Record<string, string>
  compose(args: string[], extra?: Record<string, string>): Promise<ScriptResult>
  psql(sql: string, database?: string): Promise<string>
  script(name: string, args: string[], extra?: Record<string, string>): Promise<ScriptResult>
  up(version: string): Promise<void>
  down(): Promise<void>
}

export function createStack(flavor: Flavor = 'v2', named?: { project: string; dir: string }): Stack {
  const bed = bedEnv()
  const project = named?.project ?? `ttge2e${flavor}${Date.now().toString(36)}`
  const dir = named?.dir ?? tempDir('ttg-e2e-')
  fs.mkdirSync(dir, { recursive: true })
  const envFile = path.join(dir, '.env.production')
  fs.writeFileSync(envFile, [
    'ENVIRONMENT=production', 'LOG_LEVEL=INFO', `BOT_IMAGE=${bed.BOT_IMAGE}`, 'APP_VERSION=v1.0.0',
    `TELEGRAM_BOT_TOKEN=${BOT_TOKEN}`, 'TELEGRAM_WEBHOOK_URL=', 'TELEGRAM_WEBHOOK_SECRET=e2e_webhook_secret',
    `POSTGRES_DB=${DB.name}`, `POSTGRES_USER=${DB.user}`, `POSTGRES_PASSWORD=${DB.password}`,
    `DATABASE_URL=postgresql://${DB.user}:${DB.password}@postgres:5432/${DB.name}`, 'REDIS_URL=redis://redis:6379/0',
    'STRIPE_API_KEY=sk_test_e2e_key', `POSTGRES_IMAGE=${bed.POSTGRES_IMAGE}`, `REDIS_IMAGE=${bed.REDIS_IMAGE}`, `NGINX_IMAGE=${bed.NGINX_IMAGE}`,
    '',
  ].join('\n'), { mode: 0o600 })
  const env: Record<string, string> = {
    DB_MODE: 'compose',
    COMPOSE_CLI: flavor,
    COMPOSE_PROJECT_NAME: project,
    ENV_FILE: envFile,
    DEPLOY_DIR: dir,
    BACKUP_DIR: path.join(dir, 'backups'),
    LOG_FILE: path.join(dir, 'deployment.log'),
    MIN_FREE_DISK_MB: '1',
    HEALTH_CHECK_TIMEOUT: '180',
    // No watch window unless a test asks for one: a watcher outliving its deploy would act on the
    // next test's deliberate failures (test/e2e/watch.test.ts turns it on).
    WATCH_SECONDS: '0',
  }
  const composeFile = path.join(ROOT, 'deployment/docker-compose.prod.yml')
  const head = flavor === 'v2' ? ['docker', 'compose'] : ['docker-compose']
  const stack: Stack = {
    project,
    dir,
    env,
    // PITR_REPO_DIR as the toolkit passes it (lib/commands/compose.ts): the same mounts, no recreation between the two
    compose: (args, extra = {}) => exec([...head, '--project-name', project, '--file', composeFile, '--env-file', envFile, ...args], { ...composeEnvFiles(envFile), PITR_REPO_DIR: pitrRepoDir(loadConfig(env)), ...extra }),
    async psql(sql, database = DB.name) {
      const r = await stack.compose(['exec', '-T', 'postgres', 'psql', '-U', DB.user, '-d', database, '-Atc', sql])
      if (r.code !== 0) throw new Error(`psql failed: ${r.stderr}`)
      return r.stdout.trim()
    },
    script: (name, args, extra = {}) => runScript(name, args, { ...env, ...extra }),
    async up(version) {
      await must(stack.compose(['up', '-d', 'postgres', 'redis'], { APP_VERSION: version }))
      await must(stack.compose(['run', '--rm', '-T', 'bot', 'alembic', 'upgrade', 'head'], { APP_VERSION: version }))
      await must(stack.compose(['up', '-d'], { APP_VERSION: version }))
      const waited = await stack.script('health-check', ['--wait', '180'])
      if (waited.code !== 0) throw new Error(`stack ${project} did not become healthy:\n${waited.stdout}${waited.stderr}`)
    },
    async down() {
      await stack.compose(['down', '--volumes', '--remove-orphans', '--timeout', '5'])
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
  return stack
}

/**
 * The containers' env_files derived from `envFile` as the toolkit derives them before each of its
 * compose commands (lib/stack/context.ts openContext), and the variables that point compose at them.
 */
export function composeEnvFiles(envFile: string): Record<string, string> {
  writeContainerEnvFiles(envFile, {}, readEnvFile(envFile)?.PITR_ENABLED === 'true')
  return { ENV_FILE: envFile, BOT_ENV_FILE: botEnvFile(envFile), POSTGRES_ENV_FILE: postgresEnvFile(envFile) }
}

async function must(pending: Promise<ScriptResult>): Promise<ScriptResult> {
  const r = await pending
  if (r.code !== 0) throw new Error(`command failed (${r.code}):\n${r.stdout}\n${r.stderr}`)
  return r
}

/** One checksum per table of the stack's database, to compare before and after. */
export async function stackChecksums(stack: Pick<Stack, 'psql'>): Promise<Record<string, string>> {
  const tables = (await stack.psql(`SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`)).split('\n').filter(Boolean)
  const sums: Record<string, string> = {}
  for (const table of tables) sums[table] = await stack.psql(`SELECT count(*) || ':' || md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM ${table} t`)
  return sums
}
