import fs from 'node:fs'
import path from 'node:path'
import { z } from 'zod'
import { loadConfig, type Config } from '../core/config.ts'
import { readEnvFile } from '../core/env-file.ts'
import { OpsError } from '../core/errors.ts'
import { addSecretsFrom } from '../core/redact.ts'
import { OFFSITE_VARIABLES } from '../core/offsite-config.ts'

// setup-droplet's own settings, beyond lib/core/config.ts's: who runs the stack, where the application
// repository comes from, and which packages to install. Read from the environment, which wins
// over the --env-file answers file (as the environment wins over .env.production in config.ts).
const list = z.string().transform((s) => s.split(/[\s,]+/).filter(Boolean))
const packageList = list.pipe(z.array(z.string().regex(/^[a-z0-9][a-z0-9+.:~-]*$/, 'Debian package names')))
const onOff = z.enum(['true', 'false']).transform((v) => v === 'true')
const absolutePath = z.string().refine((p) => path.isAbsolute(p), 'must be an absolute path')

const schema = z.object({
  DEPLOY_USER: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'a Linux user name').refine((u) => u !== 'root', 'must not be root').default('deploy'),
  APP_DIR: absolutePath.optional(),
  APP_REPO_URL: z.string().optional(),
  /** the operator's own private key for APP_REPO_URL (ssh), instead of one setup-droplet generates */
  DEPLOY_KEY_FILE: absolutePath.optional(),
  SSH_PORT: z.coerce.number().int().min(1).max(65535).default(22),
  CERTBOT_EMAIL: z.email().optional(),
  /**
   * what every host gets: the firewall, git and ssh for the clone (and ssh-keygen for the deploy
   * key), openssl for --self-signed, logrotate, and age, which encrypts every off-site copy
   * (installed even with off-site off: turning it on later is a line in .env.production), and curl,
   * with which a failed unit is told even when the toolkit cannot start (toogoodtogo-failure@)
   */
  SETUP_BASE_PACKAGES: packageList.default(['ufw', 'git', 'openssh-client', 'ca-certificates', 'openssl', 'logrotate', 'age', 'curl']),
  /** empty: docker.io and whichever Compose package apt offers (see lib/commands/apt.ts) */
  SETUP_DOCKER_PACKAGES: packageList.default([]),
  /** webhook mode with Let's Encrypt; nginx itself is the compose service, not a host package */
  SETUP_WEBHOOK_PACKAGES: packageList.default(['certbot']),
  SETUP_EXTRA_PACKAGES: packageList.default([]),
  /** false: sshd is the operator's own (lib/setup/hardening.ts); also --no-ssh-hardening */
  SETUP_SSH_HARDENING: onOff.default(true),
  /** false: updates are the operator's own; also --no-unattended-upgrades */
  SETUP_UNATTENDED_UPGRADES: onOff.default(true),
})

export type SetupEnv = z.infer<typeof schema>

export interface SetupSettings extends SetupEnv {
  cfg: Config
  appDir: string
  /** answers for .env.production: the environment over the --env-file file */
  input: Record<string, string>
  markerFile: string
  logDir: string
}

export function loadSetupSettings(env: NodeJS.ProcessEnv, answersFile: string | undefined): SetupSettings {
  const fileVars = answersFile ? readAnswers(answersFile) : {}
  // Registered before anything is logged: the answers hold the bot token and the passwords.
  addSecretsFrom(fileVars)
  const input: Record<string, string> = { ...fileVars, ...nonEmpty(env) }
  // The off-site answers are setup's to complete (the age key pair may be generated only later, once
  // the deploy user exists) and to check (scripts/setup-droplet.ts): not a reason to stop here.
  const cfg = loadConfig(withoutOffsite(input))
  const parsed = schema.safeParse(input)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    const name = String(issue.path[0] ?? 'configuration')
    throw new OpsError('config', `Invalid ${name}=${JSON.stringify(input[name] ?? '')}: ${issue.message}`)
  }
  return {
    ...parsed.data,
    cfg,
    appDir: parsed.data.APP_DIR ?? path.join(cfg.DEPLOY_DIR, 'app'),
    input,
    markerFile: path.join(cfg.DEPLOY_DIR, '.setup-complete'),
    logDir: path.dirname(cfg.LOG_FILE),
  }
}

/** The answers without OFFSITE_* / BACKUP_AGE_*, for loadConfig before they are complete. */
export function withoutOffsite(vars: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(vars).filter(([key]) => !(OFFSITE_VARIABLES as string[]).includes(key)))
}

function readAnswers(file: string): Record<string, string> {
  const vars = readEnvFile(file)
  if (!vars) throw new OpsError('config', `--env-file ${file}: no such file`)
  return vars
}

function nonEmpty(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== ''))
}

/**
 * The answers given this time whose value differs from the kept .env.production: names only,
 * since the values are secrets. A missing key counts as empty, as compose reads it.
 */
export function changedAnswers(given: Record<string, string>, kept: Record<string, string>, ignore: readonly string[] = []): string[] {
  return Object.keys(given)
    .filter((key) => !ignore.includes(key) && (kept[key] ?? '') !== given[key])
    .sort()
}

// ---- a re-run before setup has once completed ---------------------------------------------------

const setupStateSchema = z.object({ setup_completed_at: z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/) })

/** Where setup records that it completed once; unlike the marker, never removed to run setup again. */
export function setupStateFile(deployDir: string): string {
  return path.join(deployDir, 'setup_state.json')
}

/**
 * Whether setup has ever completed on this host: its state file, else (a host set up before the
 * state file existed) the marker or a recorded deployment. Until then a re-run applies the new
 * answers; from then on .env.production is the operator's and is kept.
 */
export function setupEverCompleted(deployDir: string, markerFile: string, artifactsFile: string): boolean {
  const file = setupStateFile(deployDir)
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw new OpsError('corrupt_state', `Cannot read ${file}: ${(error as Error).message}`)
    return fs.existsSync(markerFile) || fs.existsSync(artifactsFile)
  }
  let parsed: unknown = null
  try {
    parsed = JSON.parse(text)
  } catch {
    // reported below
  }
  if (!setupStateSchema.safeParse(parsed).success) throw new OpsError('corrupt_state', `${file} is invalid (expected {"setup_completed_at": "<UTC time>"}); fix or remove it, it was left untouched`)
  return true
}

export function setupStateContent(completedAt: string): string {
  return JSON.stringify(setupStateSchema.parse({ setup_completed_at: completedAt }), null, 2) + '\n'
}

/**
 * What an earlier, failed run wrote that has initialised something and must survive a re-run
 * with new answers: the database's credentials once its volume holds a database (initdb created
 * that user with that password; a new one would lock the bot out).
 */
export const DATABASE_KEYS = ['POSTGRES_USER', 'POSTGRES_PASSWORD', 'POSTGRES_DB', 'DATABASE_URL'] as const

export function initialisedValues(earlier: Record<string, string>, databaseInitialised: boolean): Record<string, string> {
  if (!databaseInitialised) return {}
  return Object.fromEntries(DATABASE_KEYS.flatMap((key) => (earlier[key] === undefined ? [] : [[key, earlier[key]]])))
}
