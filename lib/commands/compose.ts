import fs from 'node:fs'
import path from 'node:path'
import type { Config } from '../core/config.ts'
import { botEnvFile, postgresEnvFile } from '../core/container-env.ts'
import type { Command } from '../core/runner.ts'
import { $read } from '../core/shell.ts'

// Droplets have Compose v2 (`docker compose`); Debian 12's package is v1 (`docker-compose`). The
// flavour is detected once, here; everything else builds on `composeBase`.
export type ComposeFlavor = 'v2' | 'v1'

export interface ComposeProject {
  flavor: ComposeFlavor
  /** the production file first: relative paths in every file resolve from its directory */
  files: [string, ...string[]]
  project: string
  envFile: string | null
  /** enabled with --profile on every command (Config.composeProfiles) */
  profiles: string[]
  /** interpolation variables the toolkit fills in for every command (PITR_REPO_DIR) */
  vars?: Record<string, string>
}

/** Which Compose answers now (v2 first); null when neither does. Not remembered: setup installs one. */
export async function probeCompose(): Promise<ComposeFlavor | null> {
  for (const flavor of ['v2', 'v1'] as const) {
    const answer = await $read({ nothrow: true, timeoutMs: 30_000 })`${flavor === 'v2' ? ['docker', 'compose'] : ['docker-compose']} version`.catch(() => null)
    if (answer?.exitCode === 0) return flavor
  }
  return null
}

let detected: ComposeFlavor | undefined

export async function detectCompose(preference: 'auto' | ComposeFlavor = 'auto'): Promise<ComposeFlavor> {
  if (preference !== 'auto') return preference
  // Neither answering: keep v2, whose error message ("docker: 'compose' is not a docker command")
  // is the one an operator can search for.
  detected ??= (await probeCompose()) ?? 'v2'
  return detected
}

export async function composeProject(cfg: Config): Promise<ComposeProject> {
  return {
    flavor: await detectCompose(cfg.COMPOSE_CLI),
    files: cfg.composeFiles,
    project: cfg.COMPOSE_PROJECT_NAME,
    envFile: fs.existsSync(cfg.envFile) ? cfg.envFile : null,
    profiles: cfg.composeProfiles,
    vars: { PITR_REPO_DIR: pitrRepoDir(cfg) },
  }
}

/** pgBackRest's repo1 on the host, which the postgres service bind-mounts (never a Docker volume). */
export function pitrRepoDir(cfg: Pick<Config, 'PITR_REPO_DIR' | 'BACKUP_DIR'>): string {
  return cfg.PITR_REPO_DIR ?? path.join(cfg.BACKUP_DIR, 'pgbackrest')
}

export function composeBase(p: ComposeProject): string[] {
  const head = p.flavor === 'v2' ? ['docker', 'compose'] : ['docker-compose']
  const files = p.files.flatMap((file) => ['--file', file])
  const profiles = p.profiles.flatMap((profile) => ['--profile', profile])
  return [...head, '--project-name', p.project, ...files, ...(p.envFile ? ['--env-file', p.envFile] : []), ...profiles]
}

/**
 * Any compose subcommand. The compose file finds the bot's and postgres's env_files, derived from
 * ENV_FILE (lib/core/container-env.ts), by these variables. `vars` are interpolation variables such
 * as APP_VERSION (the tag to run).
 */
export function compose(p: ComposeProject, args: string[], vars: Record<string, string> = {}): Command {
  return { argv: [...composeBase(p), ...args], env: composeEnv(p, vars) }
}

/** The environment of every compose command of the project, for `$`: `$({ env: composeEnv(p, { APP_VERSION: tag }) })\`${composeBase(p)} up -d bot\``. */
export function composeEnv(p: ComposeProject, vars: Record<string, string> = {}): Record<string, string> {
  const envFiles: Record<string, string> = p.envFile ? { ENV_FILE: p.envFile, BOT_ENV_FILE: botEnvFile(p.envFile), POSTGRES_ENV_FILE: postgresEnvFile(p.envFile) } : {}
  return { ...envFiles, ...p.vars, ...vars }
}

/** `exec -T`: without it compose allocates a TTY, which corrupts binary output such as a dump. */
export function composeExec(p: ComposeProject, service: string, argv: string[], env: Record<string, string> = {}): Command {
  const envFlags = Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`])
  return compose(p, ['exec', '-T', ...envFlags, service, ...argv])
}
