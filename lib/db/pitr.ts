import { parseJsonOrNull } from '../core/json.ts'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { z } from 'zod'
import { ensurePostgresImage } from './pitr-image.ts'
import { pgbackrest, pgbackrestInfo, stanzaCreate, type PhysicalBackupType, type RepoNumber } from '../commands/pgbackrest.ts'
import { psql } from '../commands/postgres.ts'
import { writeFileAtomic } from '../core/atomic-file.ts'
import { linkRefused, lstatOrNull, refuseUntrustedLinks } from '../core/no-follow.ts'
import { type Config } from '../core/config.ts'
import { requireCompose, type Context } from '../stack/context.ts'
import { OpsError, messageOf } from '../core/errors.ts'
import { formatAge, formatBytes, isoSeconds } from '../core/format.ts'
import { log } from '../core/log.ts'
import { recordPhysicalBackup, recordWalArchive } from '../core/metrics.ts'
import { notify } from '../core/notify.ts'
import { $, isDryRun, timedOut } from '../core/shell.ts'
import { readEnvFile, setEnvValue } from '../core/env-file.ts'
import { pitrRepoDir } from '../commands/compose.ts'
import type { ServiceHealth } from '../stack/health.ts'
import { dayjs } from '../core/time.ts'

// Point-in-time recovery's physical line of defence: WAL archived continuously by the postgres
// service (deployment/postgres), base backups taken here. pgBackRest's own repository is the
// record of what exists; pitr_state.json (in BACKUP_DIR) only remembers how the last runs ended.

/** Why PITR cannot be used here, or null. */
export function pitrUnavailable(cfg: Config): string | null {
  if (cfg.DB_MODE === 'url') return 'DB_MODE=url: the managed database keeps its own point-in-time recovery (use the provider\'s restore); this toolkit archives WAL only for the compose postgres service'
  if (!cfg.PITR_ENABLED) return 'point-in-time recovery is off (PITR_ENABLED=false in .env.production; README: "Point-in-time recovery")'
  return null
}

export function requirePitr(cfg: Config): void {
  const reason = pitrUnavailable(cfg)
  if (reason) throw new OpsError('config', reason)
}

/** repo1 always; repo2, the off-site bucket, when there is one and a cipher password to encrypt with. */
export function pitrRepos(cfg: Config): RepoNumber[] {
  return cfg.offsite && cfg.PITR_CIPHER_PASSWORD ? [1, 2] : [1]
}

// ---- what the repositories hold (pgbackrest info --output=json) --------------------------------

const infoSchema = z.array(z.object({
  name: z.string(),
  status: z.object({ code: z.number(), message: z.string() }),
  backup: z.array(z.object({
    label: z.string(),
    type: z.string(),
    timestamp: z.object({ start: z.number(), stop: z.number() }),
    info: z.object({ size: z.number(), repository: z.object({ delta: z.number() }).partial() }).partial(),
    database: z.object({ 'repo-key': z.number() }).partial().optional(),
  })).default([]),
  archive: z.array(z.object({
    min: z.string().nullable().optional(),
    max: z.string().nullable().optional(),
    database: z.object({ 'repo-key': z.number() }).partial().optional(),
  })).default([]),
}))

export interface PhysicalBackup {
  label: string
  type: string
  repo: number
  startedAt: Date
  stoppedAt: Date
  /** the database's size at the backup */
  sizeBytes: number
  /** what this backup added to the repository */
  storedBytes: number
}

export interface RepoContents {
  backups: PhysicalBackup[]
  /** the WAL range archived, per repository */
  archive: { repo: number; min: string | null; max: string | null }[]
  /** pgBackRest's own verdict on the stanza ("ok", or why not) */
  status: string
}

export async function repoContents(ctx: Context): Promise<RepoContents> {
  const text = (await pgbackrestInfo(requireCompose(ctx))).stdout.trim()
  let parsed: z.infer<typeof infoSchema>
  try {
    parsed = infoSchema.parse(JSON.parse(text))
  } catch (error) {
    throw new OpsError('command_failed', `pgbackrest info printed something unexpected: ${messageOf(error).slice(0, 200)}`)
  }
  const stanza = parsed[0]
  if (!stanza) return { backups: [], archive: [], status: 'no stanza' }
  return {
    status: stanza.status.message,
    backups: stanza.backup.map((b) => ({
      label: b.label,
      type: b.type,
      repo: b.database?.['repo-key'] ?? 1,
      startedAt: dayjs.unix(b.timestamp.start).toDate(),
      stoppedAt: dayjs.unix(b.timestamp.stop).toDate(),
      sizeBytes: b.info.size ?? 0,
      storedBytes: b.info.repository?.delta ?? 0,
    })),
    archive: stanza.archive.map((a) => ({ repo: a.database?.['repo-key'] ?? 1, min: a.min ?? null, max: a.max ?? null })),
  }
}

export function describePhysical(b: PhysicalBackup): string {
  return `${b.label} (${b.type}, repo${b.repo}, ${isoSeconds(b.stoppedAt)}, database ${formatBytes(b.sizeBytes)}, stored ${formatBytes(b.storedBytes)})`
}

// ---- base backups ------------------------------------------------------------------------------

const FULL_EVERY_DAYS = 7

/** A full one when the repository holds none from the last week, a differential otherwise. */
export function chooseType(backups: readonly PhysicalBackup[], repo: number, now: Date): PhysicalBackupType {
  const weekAgo = dayjs.utc(now).subtract(FULL_EVERY_DAYS, 'day')
  return backups.some((b) => b.repo === repo && b.type === 'full' && !dayjs.utc(b.stoppedAt).isBefore(weekAgo)) ? 'diff' : 'full'
}

const runSchema = z.object({
  repo: z.number().int(),
  type: z.enum(['full', 'diff']),
  at: z.string(),
  outcome: z.enum(['success', 'failed']),
  label: z.string().nullable(),
  duration_s: z.number(),
  detail: z.string(),
})
const stateSchema = z.object({
  last_runs: z.array(runSchema).default([]),
  /** set while health checks find WAL archiving failing; the notification went out once */
  archiving_failing_since: z.string().nullable().default(null),
})
export type PhysicalRun = z.infer<typeof runSchema>
type PitrState = z.infer<typeof stateSchema>

function stateFile(cfg: Config): string {
  return path.join(cfg.BACKUP_DIR, 'pitr_state.json')
}

export function readPitrState(cfg: Config): PitrState {
  const file = stateFile(cfg)
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { last_runs: [], archiving_failing_since: null }
    throw new OpsError('corrupt_state', `Cannot read ${file}: ${messageOf(error)}`)
  }
  const parsed = stateSchema.safeParse(parseJsonOrNull(text))
  if (!parsed.success) throw new OpsError('corrupt_state', `${file} is invalid (${parsed.error.issues[0]?.message}); fix or move it aside, it was left untouched`)
  return parsed.data
}


function writePitrState(cfg: Config, state: PitrState): void {
  fs.mkdirSync(cfg.BACKUP_DIR, { recursive: true, mode: 0o700 })
  writeFileAtomic(stateFile(cfg), JSON.stringify(state, null, 2) + '\n')
}

/**
 * `backup --physical`: a base backup into every repository (each its own pgBackRest run: one
 * failing does not stop the other), expiry by pgBackRest's retention, the outcome recorded.
 * Throws after trying them all when any failed.
 */
export async function takePhysicalBackups(ctx: Context, requested: PhysicalBackupType | 'auto'): Promise<PhysicalRun[]> {
  requirePitr(ctx.cfg)
  const p = requireCompose(ctx)
  await stanzaCreate(p)
  const existing = isDryRun() ? [] : (await repoContents(ctx)).backups
  const runs: PhysicalRun[] = []
  for (const repo of pitrRepos(ctx.cfg)) {
    const type = requested === 'auto' ? chooseType(existing, repo, new Date()) : requested
    log.info(`Starting physical backup (pgBackRest ${type}, repo${repo}${repo === 2 ? ` in bucket ${ctx.cfg.offsite?.bucket}` : ''})`)
    const started = Date.now()
    const timeoutMs = ctx.cfg.DB_OPERATION_TIMEOUT * 1000 * 6
    const running = pgbackrest(p, [`--repo=${repo}`, `--type=${type}`, 'backup'], { timeoutMs, nothrow: true })
    const outcome = await running
    if (timedOut(running)) throw new OpsError('timeout', `Timed out after ${timeoutMs / 1000}s: ${running.cmd}`)
    if (isDryRun()) continue
    const duration = Math.round((Date.now() - started) / 100) / 10
    const newest = outcome.exitCode === 0 ? (await repoContents(ctx)).backups.filter((b) => b.repo === repo).at(-1) ?? null : null
    const detail = outcome.exitCode === 0 ? (newest ? describePhysical(newest) : 'done') : lastLines(outcome.stderr || outcome.stdout)
    runs.push({ repo, type, at: isoSeconds(), outcome: outcome.exitCode === 0 ? 'success' : 'failed', label: newest?.label ?? null, duration_s: duration, detail })
    if (outcome.exitCode === 0) log.info(`Physical backup complete in ${duration}s: ${detail}`)
    else log.error(`Physical backup to repo${repo} failed: ${detail}`)
  }
  if (isDryRun()) return runs
  recordRuns(ctx.cfg, runs)
  const failed = runs.filter((r) => r.outcome === 'failed')
  if (failed.length) {
    await notify(ctx.cfg, `Physical backup failed on ${os.hostname()}: ${failed.map((r) => `repo${r.repo}: ${r.detail}`).join('; ')}`)
    throw new OpsError('command_failed', `Physical backup failed: ${failed.map((r) => `repo${r.repo}: ${r.detail}`).join('; ')}`, { alreadyNotified: true })
  }
  return runs
}

function recordRuns(cfg: Config, runs: PhysicalRun[]): void {
  const state = readPitrState(cfg)
  const repos = new Set(runs.map((r) => r.repo))
  writePitrState(cfg, { ...state, last_runs: [...state.last_runs.filter((r) => !repos.has(r.repo)), ...runs].sort((a, b) => a.repo - b.repo) })
  // Not toogoodtogo_backup_*: BackupMissing is about the dumps, which a base backup does not replace.
  for (const r of runs.filter((r) => r.outcome === 'success')) recordPhysicalBackup(cfg, r.repo, dayjs.utc(r.at).toDate())
}

function lastLines(text: string): string {
  return text.trim().split('\n').filter((l) => /ERROR|WARN|error/i.test(l)).slice(-2).join(' | ') || text.trim().split('\n').slice(-2).join(' | ') || 'no output'
}

// ---- is archiving keeping up? ------------------------------------------------------------------

export interface ArchiverStatus {
  archiveMode: string
  lastArchivedWal: string | null
  lastArchivedAt: Date | null
  failedCount: number
  lastFailedWal: string | null
  lastFailedAt: Date | null
  /** segments complete and waiting for archive_command (pg_wal/archive_status/*.ready) */
  waiting: number
  oldestWaitingSince: Date | null
}

const ARCHIVER_SQL = `SELECT current_setting('archive_mode'), coalesce(last_archived_wal, ''), coalesce(extract(epoch FROM last_archived_time)::bigint, 0),
  failed_count, coalesce(last_failed_wal, ''), coalesce(extract(epoch FROM last_failed_time)::bigint, 0),
  (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'),
  (SELECT coalesce(extract(epoch FROM min(modification))::bigint, 0) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')
FROM pg_stat_archiver`

export async function archiverStatus(ctx: Context): Promise<ArchiverStatus> {
  const line = (await psql(ctx.db, ctx.db.database, ARCHIVER_SQL, { read: true, timeoutMs: 10_000 })).stdout.trim()
  return parseArchiverStatus(line)
}

export function parseArchiverStatus(line: string): ArchiverStatus {
  const [mode = '', archived = '', archivedAt = '0', failed = '0', failedWal = '', failedAt = '0', waiting = '0', waitingSince = '0'] = line.trim().split('|')
  const date = (epoch: string) => (Number(epoch) > 0 ? dayjs.unix(Number(epoch)).toDate() : null)
  return {
    archiveMode: mode,
    lastArchivedWal: archived || null,
    lastArchivedAt: date(archivedAt),
    failedCount: Number(failed),
    lastFailedWal: failedWal || null,
    lastFailedAt: date(failedAt),
    waiting: Number(waiting),
    oldestWaitingSince: date(waitingSince),
  }
}

/**
 * Archiving that silently stops is the classic PITR failure: pg_wal grows until the disk is full,
 * and the archive ends where it stopped. A problem is a segment waiting longer than
 * archive_timeout plus a margin, or a last attempt that failed; null while archiving keeps up.
 */
export function archivingProblem(s: ArchiverStatus, now: Date, archiveTimeoutS: number): string | null {
  if (s.archiveMode !== 'on') return `WAL archiving is off in the server (archive_mode=${s.archiveMode}) though PITR_ENABLED=true: recreate the postgres container (docker compose up -d postgres)`
  const failedAt = s.lastFailedAt
  const failing = failedAt !== null && (!s.lastArchivedAt || failedAt >= s.lastArchivedAt)
  const lastFailure = failing ? `; last failure: ${s.lastFailedWal} at ${isoSeconds(failedAt)}` : ''
  const waitedS = s.oldestWaitingSince ? dayjs(now).diff(s.oldestWaitingSince) / 1000 : 0
  if (s.waiting > 0 && waitedS > archiveTimeoutS + 60) {
    return `WAL archiving is behind: ${s.waiting} segment(s) waiting, the oldest for ${formatAge(waitedS)}${lastFailure}`
  }
  if (failing) return `WAL archiving is failing${lastFailure}`
  return null
}

/** Every WAL written up to this moment is in the archive: now while nothing waits. */
export function archivedUpTo(s: ArchiverStatus, now: Date): Date {
  return s.waiting > 0 && s.oldestWaitingSince ? s.oldestWaitingSince : now
}

/**
 * For health-check: publishes how current the archive is, and tells the notification channels
 * once when archiving starts failing, and once when it has caught up.
 */
export async function noteArchiving(cfg: Config, status: ArchiverStatus, problem: string | null, now: Date): Promise<void> {
  recordWalArchive(cfg, archivedUpTo(status, now))
  const state = readPitrState(cfg)
  if (problem && !state.archiving_failing_since) {
    writePitrState(cfg, { ...state, archiving_failing_since: isoSeconds(now) })
    await notify(cfg, `PostgreSQL WAL archiving on ${os.hostname()} needs attention: ${problem}. Writes since then are not in the archive; pg_wal grows until it is fixed.`)
  } else if (!problem && state.archiving_failing_since) {
    writePitrState(cfg, { ...state, archiving_failing_since: null })
    await notify(cfg, `PostgreSQL WAL archiving on ${os.hostname()} has caught up (failing since ${state.archiving_failing_since}).`)
  }
}

/**
 * health-check's view of archiving, added to a healthy postgres: degraded with the reason while
 * archiving fails or falls behind. Not part of deploy's health gate: a bucket that is down must
 * not roll a release back.
 */
export async function withArchiving(ctx: Context, postgres: ServiceHealth): Promise<ServiceHealth> {
  if (pitrUnavailable(ctx.cfg) || postgres.status !== 'healthy') return postgres
  const now = new Date()
  let status: ArchiverStatus
  try {
    await armArchiveTimeout(ctx)
    status = await archiverStatus(ctx)
  } catch (error) {
    return { ...postgres, status: 'degraded', detail: `${postgres.detail}; WAL archiver status unreadable: ${messageOf(error)}` }
  }
  const problem = archivingProblem(status, now, ctx.cfg.PITR_ARCHIVE_TIMEOUT)
  await noteArchiving(ctx.cfg, status, problem, now)
  const runs = readPitrState(ctx.cfg).last_runs
  const archive = { archived_up_to: isoSeconds(archivedUpTo(status, now)), last_archived_wal: status.lastArchivedWal, waiting_segments: status.waiting, failed_count: status.failedCount, last_base_backups: runs }
  // The backup run already notified; a failed last base backup still shows here until one succeeds.
  const failedBackups = runs.filter((r) => r.outcome === 'failed').map((r) => `the last base backup to repo${r.repo} failed at ${r.at}: ${r.detail}`)
  const problems = [...(problem ? [problem] : []), ...failedBackups]
  if (!problems.length) return { ...postgres, wal_archive: archive }
  return { ...postgres, status: 'degraded', detail: `${postgres.detail}; ${problems.join('; ')}`, wal_archive: archive }
}

/**
 * repo1 lives under BACKUP_DIR on the host but is written by the server's own user inside the
 * container (uid 999 in the official image, 101 in the bed's): created with that owner, 0700. Done
 * as root in a container of the server's image, so that deploy (the deploy user, who cannot chown)
 * prepares it exactly as setup (root) does; the uid is the one that image gives its postgres user.
 */
export async function preparePitrRepoDir(cfg: Config): Promise<string> {
  const dir = pitrRepoDir(cfg)
  const image = await ensurePostgresImage(cfg.POSTGRES_IMAGE)
  if (!isDryRun()) {
    // BACKUP_DIR is the deploy user's: a link planted at repo1's name is refused, never chowned.
    refuseUntrustedLinks(dir)
    if (lstatOrNull(dir)?.isSymbolicLink()) throw linkRefused(dir)
    fs.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o700 })
  }
  // mkdir, chown to the image's postgres user, chmod 700; prints uid:gid. The path is an argument, never shell text.
  const script = 'owner="$(id -u postgres):$(id -g postgres)" && mkdir -p "$1" && chown "$owner" "$1" && chmod 700 "$1" && echo "$owner"'
  const inside = path.posix.join('/repo-parent', path.basename(dir))
  const owner = (await $({ timeoutMs: 2 * 60_000 })`docker run --rm --user 0 --entrypoint sh --volume ${`${path.dirname(dir)}:/repo-parent`} ${image} -c ${script} sh ${inside}`).stdout.trim()
  log.info(`pgBackRest repo1: ${dir} (owned by ${owner || 'the server\'s user'}, the server's user in ${image}, mode 700)`)
  return dir
}

/**
 * Turning PITR on by editing .env.production and deploying: repo1 prepared as setup prepares it,
 * its path written to the file when it is not there (what compose mounts, also when an operator
 * runs compose by hand), before postgres is recreated with archiving on. A repository that cannot
 * be prepared stops the deploy before anything changed: archiving into it would fail on every
 * segment.
 */
export async function ensurePitrRepo(cfg: Config): Promise<void> {
  if (pitrUnavailable(cfg)) return
  try {
    const dir = await preparePitrRepoDir(cfg)
    if (!isDryRun() && readEnvFile(cfg.envFile)?.PITR_REPO_DIR === undefined) {
      setEnvValue(cfg.envFile, 'PITR_REPO_DIR', dir)
      log.info(`PITR_REPO_DIR=${dir} written to ${cfg.envFile}`)
    }
  } catch (error) {
    throw new OpsError('config', `Point-in-time recovery is on but its repository ${pitrRepoDir(cfg)} could not be prepared (nothing was changed): ${messageOf(error)}`, { cause: error })
  }
}

/** Once postgres runs with archiving on: the stanza (idempotent), without which no segment is archived. */
export async function ensureStanza(ctx: Context): Promise<void> {
  if (pitrUnavailable(ctx.cfg)) return
  const created = await stanzaCreate(requireCompose(ctx), { nothrow: true })
  if (created.exitCode !== 0) {
    throw new OpsError('config', `Point-in-time recovery is on but pgbackrest stanza-create failed (the running version is untouched; WAL archiving fails until this is fixed): ${lastLines(created.stderr || created.stdout)}`)
  }
  if (isDryRun()) return
  const contents = await repoContents(ctx).catch((error: unknown) => {
    log.warn(`Cannot read what pgBackRest's repositories hold: ${messageOf(error)}`)
    return null
  })
  if (contents && !contents.backups.some((b) => b.repo === 1)) log.warn('Point-in-time recovery: repo1 holds no base backup yet, so there is nothing to replay WAL onto: run backup.sh --physical full now (the nightly backup takes one otherwise)')
}

/**
 * PostgreSQL forces no archive_timeout segment switch until the first checkpoint after the server
 * started (measured on 15.18: none in 80 s at archive_timeout=5, then one every 5 s from the first
 * timed checkpoint on), and checkpoint_timeout is 5 minutes: a restarted server would leave that
 * long of writes outside the archive. A CHECKPOINT right after a start arms it; true when one ran.
 */
export async function armArchiveTimeout(ctx: Context): Promise<boolean> {
  if (pitrUnavailable(ctx.cfg)) return false
  // checkpoint_time has whole seconds: a restart within one second must still count as "none since"
  // (at worst a checkpoint in the start's own second is followed by one more).
  const needed = await psql(ctx.db, ctx.db.database, 'SELECT (pg_control_checkpoint()).checkpoint_time <= pg_postmaster_start_time()', { read: true, timeoutMs: 5 * 60_000 })
  if (needed.stdout.trim() !== 't') return false
  await psql(ctx.db, ctx.db.database, 'CHECKPOINT', { timeoutMs: 5 * 60_000 })
  log.info('CHECKPOINT after the server start: archive_timeout now bounds the writes outside the archive')
  return true
}
