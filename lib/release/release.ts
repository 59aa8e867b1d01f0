import os from 'node:os'
import path from 'node:path'
import { sleep } from 'zx'
import { composeBase, composeEnv, type ComposeProject } from '../commands/compose.ts'
import { findContainer } from '../commands/docker.ts'
import { gitEnv } from '../commands/git.ts'
import { psql, type Db } from '../commands/postgres.ts'
import { type Config } from '../core/config.ts'
import { requireCompose, type Context } from '../stack/context.ts'
import { setEnvValue } from '../core/env-file.ts'
import { OpsError } from '../core/errors.ts'
import { isoSeconds } from '../core/format.ts'
import { log } from '../core/log.ts'
import { recordDeploy } from '../core/metrics.ts'
import { notify } from '../core/notify.ts'
import { looksTransient, retry } from '../core/retry.ts'
import { $, isDryRun, $read } from '../core/shell.ts'
import { appendEvent, completeEvent, readState, TAG, writeState, type Artifact, type DeployEvent, type DeployState } from './deploy-state.ts'
import { checkHealth, SERVICES, unhealthyLines, waitUntilHealthy } from '../stack/health.ts'
import { blueGreenPlan, blueGreenSwitch, isWebhookMode, pinRunningBot } from './bluegreen.ts'
import { clearWebhook, describeSwitch, pendingModeSwitch, removeNginx } from './mode.ts'
import { dayjs } from '../core/time.ts'

// What deploy and rollback do to the application: its git checkout, its image, its migrations,
// and the switch from one bot container to the next.

/**
 * A one-off container of the bot's image (APP_VERSION in the environment) beside the running one,
 * no dependencies started: the migrations, alembic's head, a downgrade.
 */
export function botRun(p: ComposeProject): string[] {
  return [...composeBase(p), 'run', '--rm', '-T', '--no-deps', 'bot']
}

/** The stack on `tag`: what is already current stays, the bot is recreated; services no longer in the file go. */
async function composeUpAll(p: ComposeProject, tag: string): Promise<void> {
  await $({ env: composeEnv(p, { APP_VERSION: tag }), timeoutMs: 5 * 60_000 })`${composeBase(p)} up -d --remove-orphans`
}

/** The bot's stop_grace_period (STOP_TIMEOUT) to finish in-flight updates; the command's own limit allows for it. */
export async function stopBot(cfg: Config, p: ComposeProject): Promise<void> {
  await $({ env: composeEnv(p), timeoutMs: (cfg.STOP_TIMEOUT + 60) * 1000 })`${composeBase(p)} stop --timeout ${cfg.STOP_TIMEOUT} bot`
}

/** Pull (with the contract's retries) or, with --build, build from the checkout. */
export async function pullImage(p: ComposeProject, tag: string, build: { appDir: string } | null): Promise<void> {
  const dc = composeBase(p)
  const overlay = path.join(path.dirname(p.files[0]), 'docker-compose.build.yml')
  await retry(async () => {
    if (build) await $({ env: composeEnv(p, { APP_VERSION: tag, APP_DIR: build.appDir }), timeoutMs: 15 * 60_000 })`${dc} --file ${overlay} build bot`
    else await $({ env: composeEnv(p, { APP_VERSION: tag }), timeoutMs: 15 * 60_000 })`${dc} pull --quiet bot`
  }, { what: build ? 'Image build' : 'Image pull', isTransient: looksTransient, baseDelayMs: 2000 })
}

/** The schema revision alembic recorded; null when the database has none yet. */
export async function schemaRevision(db: Db): Promise<string | null> {
  const query = async (sql: string) => (await psql(db, db.database, sql, { read: true, timeoutMs: 30_000 })).stdout.trim()
  // Two statements: a query naming a missing table fails when planned, whatever a CASE says.
  if ((await query(`SELECT to_regclass('public.alembic_version') IS NOT NULL`)) !== 't') return null
  return (await query(`SELECT string_agg(version_num, ',' ORDER BY version_num) FROM public.alembic_version`)) || null
}

export async function imageDigest(image: string): Promise<string | null> {
  const result = await $read({ nothrow: true, timeoutMs: 30_000 })`docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' ${image}`
  return /sha256:[0-9a-f]{64}/.exec(result.stdout)?.[0] ?? null
}

/** The Deployment Artifact's created_at and size_mb from `docker image inspect`; nulls for what it does not say. */
export function parseImageFacts(output: string): { created_at: string | null; size_mb: number | null } {
  const [created = '', size = ''] = output.trim().split(/\s+/)
  const at = dayjs.utc(created)
  const bytes = /^\d+$/.test(size) ? Number(size) : NaN
  return { created_at: created && at.isValid() ? isoSeconds(at) : null, size_mb: Number.isFinite(bytes) ? Math.round(bytes / (1024 * 1024)) : null }
}

// ---- downtime ------------------------------------------------------------------------------------

const HEARTBEAT = process.env.HEARTBEAT_FILE ?? '/tmp/heartbeat'

/** mtime of the stopped container's heartbeat file, read from the tar `docker cp` streams out. */
export async function lastHeartbeat(containerId: string): Promise<number | null> {
  // a tar stream on stdout, small: zx keeps it in memory
  const result = await $read({ nothrow: true, timeoutMs: 30_000 })`docker cp ${`${containerId}:${HEARTBEAT}`} -`
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
      const r = await $read({ nothrow: true, timeoutMs: 10_000 })`docker exec -i ${container.id} python3 -c ${probe}`.catch(() => null)
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
  await stopBot(cfg, p)
  const stoppedAt = Date.now()
  const lastBeat = old ? ((await lastHeartbeat(old.id)) ?? stoppedAt) : null
  await composeUpAll(p, tag)
  if (lastBeat === null) return null
  const firstBeat = await firstHeartbeat(p, Date.now() + cfg.HEALTH_CHECK_TIMEOUT * 1000)
  return firstBeat === null ? null : Math.max(0, (firstBeat - lastBeat) / 1000)
}

export function requireImage(cfg: Config): string {
  if (!cfg.BOT_IMAGE) throw new OpsError('config', `BOT_IMAGE is not set (in ${cfg.envFile} or the environment)`)
  return cfg.BOT_IMAGE
}

// Steps deploy.ts and rollback.ts both take, each logging the contract's lines.
export interface GateResult {
  passed: boolean
  /** why it failed: the service lines, or what makes the bot certain to stay down */
  reason: string
}

/** The health gate, through health-check's own code; ends early when the bot cannot recover. */
export async function healthGate(ctx: Context): Promise<GateResult> {
  if (isDryRun()) return { passed: true, reason: '' }
  const { report, waitedOut, dead } = await waitUntilHealthy(ctx, SERVICES, ctx.cfg.HEALTH_CHECK_TIMEOUT * 1000)
  if (!waitedOut) return { passed: true, reason: '' }
  const failing = unhealthyLines(report)
  for (const line of failing) log.error(line)
  return { passed: false, reason: dead ?? `not healthy after ${ctx.cfg.HEALTH_CHECK_TIMEOUT}s: ${failing.join('; ')}` }
}

export async function isHealthyNow(ctx: Context): Promise<boolean> {
  return (await checkHealth(ctx, SERVICES)).overall_status === 'healthy'
}

/** The commit `ref` names (a tag, a SHA); null when the checkout has no such commit. */
export async function resolveRef(dir: string, ref: string): Promise<string | null> {
  const sha = await $read({ env: gitEnv(), nothrow: true, timeoutMs: 30_000 })`git -C ${dir} rev-parse --verify --quiet ${`${ref}^{commit}`}`
  return sha.exitCode === 0 && sha.stdout.trim() ? sha.stdout.trim() : null
}

/** --force: the checkout is the toolkit's, never edited by hand; a stray change must not block a deploy. */
export async function checkout(ctx: Context, tag: string): Promise<void> {
  await $({ env: gitEnv(), timeoutMs: 5 * 60_000 })`git -C ${ctx.cfg.APP_DIR} checkout --detach --force --quiet ${tag}`
}

/**
 * Runs `tag`; returns the measured downtime in seconds, to a tenth (null when not measurable). In
 * webhook mode the new version starts beside the old one (bluegreen.ts): downtime 0, and when it
 * never becomes healthy OldVersionServing says the old one still serves. `stopFirst`, polling
 * mode or a switch between the modes stops the old one first. Polling mode makes sure no webhook
 * is set before the poller starts and that no nginx is left; webhook mode's nginx comes up with
 * the stack (its profile), and Telegram's webhook is set after the gate (mode.ts registerWebhook).
 */
export async function switchVersion(ctx: Context, tag: string, opts: { stopFirst?: boolean } = {}): Promise<number | null> {
  const p = requireCompose(ctx)
  const webhook = isWebhookMode(ctx.cfg)
  // A switch between polling and webhook mode (.env.production edited since the running bot
  // started) stops the old bot first: a poller and a webhook bot side by side each miss what
  // Telegram gives the other.
  const modeSwitch = await pendingModeSwitch(ctx.cfg, p)
  if (modeSwitch) log.info(describeSwitch(modeSwitch))
  if (!webhook) await clearWebhook(ctx.cfg, modeSwitch?.from === 'webhook')
  const plan = !opts.stopFirst && !modeSwitch && webhook ? await blueGreenPlan(p) : null
  if (plan) {
    await blueGreenSwitch(ctx.cfg, p, tag, plan)
    // nginx, when it is not running; the bot container already runs this config and stays.
    await composeUpAll(p, tag)
    // An nginx started just now is pinned before any client holds a connection to it.
    if (!plan.nginx && !isDryRun()) await pinRunningBot(p)
    return isDryRun() ? null : 0
  }
  const downtime = await switchTo(ctx.cfg, p, tag)
  if (!webhook) await removeNginx(p)
  else if (!isDryRun()) await pinRunningBot(p)
  return isDryRun() || downtime === null ? null : Math.round(downtime * 10) / 10
}

export function record(ctx: Context, event: DeployEvent): DeployEvent {
  appendEvent(ctx.cfg.AUDIT_LOG, event)
  if (!isDryRun()) publishOutcome(ctx, event)
  return event
}

/** A finished deploy or rollback, for the alert on failed deploys and the release on the dashboard. */
function publishOutcome(ctx: Context, event: DeployEvent): void {
  const outcome = event.status
  if (outcome === 'in_progress' || outcome === 'cancelled' || (event.event_type !== 'deploy' && event.event_type !== 'rollback')) return
  let current: DeployState['current'] = null
  try {
    current = readState(ctx.cfg.ARTIFACTS_FILE, ctx.cfg.legacyArtifactsFile).current
  } catch {
    // an unreadable state file is reported where it is read for real; the outcome still counts
  }
  recordDeploy(ctx.cfg, {
    event: event.event_type, outcome, finishedAt: new Date(), downtimeSeconds: event.downtime_seconds,
    running: current?.deployed_at ? { version: current.artifact_id, deployedAt: dayjs.utc(current.deployed_at).toDate() } : null,
  })
}

/**
 * The Deployment Artifact of `ref` as it runs now: its commit, image and digest, the schema. A
 * name that is neither a release tag nor a full SHA (setup's APP_VERSION may be one) is recorded
 * by its commit, the form deploy and rollback accept.
 */
export async function artifactFor(ctx: Context, ref: string, at: { rollbackFrom: string | null; schemaRevision: string | null }): Promise<Artifact> {
  const image = `${requireImage(ctx.cfg)}:${ref}`
  const sha = (await resolveRef(ctx.cfg.APP_DIR, ref)) ?? ''
  return {
    artifact_id: TAG.test(ref) ? ref : sha,
    git_commit_sha: sha,
    git_tag: /^v\d+\.\d+\.\d+$/.test(ref) ? ref : null,
    docker_image_uri: image,
    docker_image_digest: await imageDigest(image),
    ...parseImageFacts((await $read({ nothrow: true, timeoutMs: 30_000 })`docker image inspect --format '{{.Created}} {{.Size}}' ${image}`).stdout),
    deployed: true,
    deployed_at: isoSeconds(),
    rollback_from: at.rollbackFrom,
    schema_revision: at.schemaRevision,
  }
}

export interface Deployed {
  state: DeployState
  tag: string
  event: DeployEvent
  /** the version a rollback left (null for a deploy) */
  rollbackFrom: string | null
  /** the notification's text; null when the caller tells the outcome itself (the watcher) */
  message: string | null
}

/**
 * The one way a version becomes the recorded current one, for deploy and rollback alike: the
 * artifact (SHA, image digest, schema), APP_VERSION in .env.production so a reboot starts it, the
 * event closed as success, the notification.
 */
export async function recordDeployed(ctx: Context, d: Deployed): Promise<void> {
  if (isDryRun()) return
  const artifact = await artifactFor(ctx, d.tag, { rollbackFrom: d.rollbackFrom, schemaRevision: d.event.schema_revision_after ?? (await schemaRevision(ctx.db)) })
  writeState(ctx.cfg.ARTIFACTS_FILE, { current: artifact, previous: d.state.current ? { ...d.state.current, deployed: false } : null })
  setEnvValue(ctx.cfg.envFile, 'APP_VERSION', d.tag)
  record(ctx, completeEvent({ ...d.event, health_check_passed: true }, 'success', null))
  if (d.message !== null) await notify(ctx.cfg, `${d.message} on ${os.hostname()}.`)
}
