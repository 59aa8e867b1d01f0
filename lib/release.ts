import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { compose, composeStop, type ComposeProject } from './compose.ts'
import type { Config } from './config.ts'
import { execInContainer, findContainer } from './containers.ts'
import { OpsError } from './errors.ts'
import { psqlQuery, type Db } from './postgres.ts'
import { looksTransient, retry } from './retry.ts'
import { capture, run, tryRun, type Command } from './runner.ts'

// What deploy and rollback do to the application: its git checkout, its image, its migrations,
// and the switch from one bot container to the next. Builders return argv; callers run them.
// No terminal prompt for credentials: a remote the deploy user cannot reach fails with git's
// message instead of waiting for a password nobody will type.
const GIT_ENV = { GIT_TERMINAL_PROMPT: '0' }

export function gitFetch(appDir: string): Command {
  return { argv: ['git', '-C', appDir, 'fetch', '--tags', '--force', '--prune', 'origin'], env: GIT_ENV, timeoutMs: 120_000, mutates: false }
}

export function gitResolve(appDir: string, ref: string): Command {
  return { argv: ['git', '-C', appDir, 'rev-parse', '--verify', '--quiet', `${ref}^{commit}`], env: GIT_ENV, mutates: false, timeoutMs: 30_000 }
}

export function gitCheckout(appDir: string, ref: string): Command {
  return { argv: ['git', '-C', appDir, 'checkout', '--detach', '--force', '--quiet', ref], env: GIT_ENV, timeoutMs: 60_000 }
}

/** Pull (with the contract's retries) or, with --build, build from the checkout. */
export function imageCommand(p: ComposeProject, tag: string, build: { appDir: string } | null): Command {
  if (!build) return { ...compose(p, ['pull', '--quiet', 'bot'], { APP_VERSION: tag }), timeoutMs: 15 * 60_000 }
  const overlay = path.join(path.dirname(p.file), 'docker-compose.build.yml')
  return { ...compose(p, ['--file', overlay, 'build', 'bot'], { APP_VERSION: tag, APP_DIR: build.appDir }), timeoutMs: 15 * 60_000 }
}

export function migrateCommand(p: ComposeProject, tag: string, migrate: string): Command {
  return { ...compose(p, ['run', '--rm', '-T', '--no-deps', 'bot', ...migrate.split(/\s+/)], { APP_VERSION: tag }), timeoutMs: 10 * 60_000 }
}

export function upCommand(p: ComposeProject, tag: string, profiles: string | undefined): Command {
  return { ...compose(p, ['up', '-d', '--remove-orphans'], { APP_VERSION: tag, ...(profiles ? { COMPOSE_PROFILES: profiles } : {}) }), timeoutMs: 5 * 60_000 }
}

export async function pullImage(p: ComposeProject, tag: string, build: { appDir: string } | null): Promise<void> {
  await retry(() => run(imageCommand(p, tag, build)), { what: build ? 'Image build' : 'Image pull', isTransient: looksTransient, baseDelayMs: 2000 })
}

/** The schema revision alembic recorded; null when the database has none yet. */
export async function schemaRevision(db: Db): Promise<string | null> {
  const query = (sql: string) => capture(psqlQuery(db, db.database, sql, { mutates: false, timeoutMs: 30_000 }))
  // Two statements: a query naming a missing table fails when planned, whatever a CASE says.
  if ((await query(`SELECT to_regclass('public.alembic_version') IS NOT NULL`)) !== 't') return null
  return (await query(`SELECT string_agg(version_num, ',' ORDER BY version_num) FROM public.alembic_version`)) || null
}

export async function imageDigest(image: string): Promise<string | null> {
  const result = await tryRun({ argv: ['docker', 'image', 'inspect', '--format', '{{range .RepoDigests}}{{println .}}{{end}}', image], mutates: false, timeoutMs: 30_000 })
  return /sha256:[0-9a-f]{64}/.exec(result.stdout)?.[0] ?? null
}

// ---- downtime ------------------------------------------------------------------------------------

const HEARTBEAT = process.env.HEARTBEAT_FILE ?? '/tmp/heartbeat'

/** mtime of the stopped container's heartbeat file, read from the tar `docker cp` streams out. */
export async function lastHeartbeat(containerId: string): Promise<number | null> {
  const result = await tryRun({ argv: ['docker', 'cp', `${containerId}:${HEARTBEAT}`, '-'], mutates: false, timeoutMs: 30_000 })
  if (result.exitCode !== 0 || result.stdout.length < 148) return null
  const mtime = parseInt(result.stdout.slice(136, 148).replace(/\0.*$/, '').trim(), 8)
  return Number.isFinite(mtime) ? mtime * 1000 : null
}

/** Polls the new bot until its first heartbeat; the time it was written, in ms. */
export async function firstHeartbeat(p: ComposeProject, deadlineMs: number): Promise<number | null> {
  const probe = `import os;print(os.stat(${JSON.stringify(HEARTBEAT)}).st_mtime)`
  while (Date.now() < deadlineMs) {
    const container = await findContainer(p, 'bot').catch(() => null)
    if (container?.status === 'running') {
      const r = await tryRun(execInContainer(container.id, ['python3', '-c', probe], 10_000)).catch(() => null)
      const seconds = r?.exitCode === 0 ? Number(r.stdout.trim()) : NaN
      if (Number.isFinite(seconds)) return seconds * 1000
    }
    await sleep(250)
  }
  return null
}

/**
 * The switch for a polling bot: the old container stops first (its stop_grace_period lets it
 * finish in-flight updates; two pollers would get 409 Conflict), then the stack comes up on the
 * new tag. Returns the downtime: old bot's last heartbeat to the new bot's first.
 */
export async function switchTo(cfg: Config, p: ComposeProject, tag: string): Promise<number | null> {
  const old = await findContainer(p, 'bot')
  await run(composeStop(p, ['bot'], cfg.STOP_TIMEOUT))
  const stoppedAt = Date.now()
  const lastBeat = old ? ((await lastHeartbeat(old.id)) ?? stoppedAt) : null
  await run(upCommand(p, tag, cfg.COMPOSE_PROFILES))
  if (lastBeat === null) return null
  const firstBeat = await firstHeartbeat(p, Date.now() + cfg.HEALTH_CHECK_TIMEOUT * 1000)
  return firstBeat === null ? null : Math.max(0, (firstBeat - lastBeat) / 1000)
}

export function requireImage(cfg: Config): string {
  if (!cfg.BOT_IMAGE) throw new OpsError('config', `BOT_IMAGE is not set (in ${cfg.envFile} or the environment)`)
  return cfg.BOT_IMAGE
}
