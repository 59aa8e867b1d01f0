import { sleep, type ProcessPromise } from 'zx'
import { findContainer, inspectContainers, type ContainerInfo } from '../commands/docker.ts'
import type { Context } from './context.ts'
import { messageOf } from '../core/errors.ts'
import { psql } from '../commands/postgres.ts'
import { progressReporter } from '../core/progress.ts'
import { $read, timedOut } from '../core/shell.ts'
import { isoSeconds } from '../core/format.ts'

// The contract's health checks and the data model's Health Status derivation, shared by
// health-check.ts, restore.ts (after the swap) and deploy.ts (its health gate).
export const SERVICES = ['bot', 'postgres', 'redis', 'nginx'] as const
export type Service = (typeof SERVICES)[number]
export type Status = 'healthy' | 'degraded' | 'unhealthy' | 'not_deployed'

export interface ServiceHealth {
  status: Status
  response_time_ms: number | null
  /** the words in parentheses: "response: 45ms", "redis connection failed" */
  detail: string
  timed_out: boolean
  [extra: string]: unknown
}

export interface HealthReport {
  timestamp: string
  overall_status: 'healthy' | 'degraded' | 'unhealthy'
  services: Partial<Record<Service, ServiceHealth>>
  /** on a Swarm manager: its nodes (lib/swarm/cluster.ts); absent in compose mode */
  swarm?: ServiceHealth
}

const QUERY_TIMEOUT_MS = 10_000 // the contract's limit for one health query
const HEARTBEAT_MAX_AGE_S = 60

export async function checkHealth(ctx: Context, services: readonly Service[]): Promise<HealthReport> {
  const results: Partial<Record<Service, ServiceHealth>> = {}
  for (const service of services) results[service] = await checkService(ctx, service)
  return { timestamp: isoSeconds(), overall_status: overall(results), services: results }
}

export interface WaitResult {
  report: HealthReport
  /** true when the deadline passed or the bot is dead: the services are not healthy */
  waitedOut: boolean
  /** why the bot can never become healthy (exited, restart loop, startup error); null otherwise */
  dead: string | null
}

/**
 * Polls until every service is healthy or the deadline passes; returns the last report. A bot that
 * is certain to stay unhealthy ends the wait at once: waiting out the deadline only lengthens the
 * outage before the rollback.
 */
export async function waitUntilHealthy(ctx: Context, services: readonly Service[], timeoutMs: number): Promise<WaitResult> {
  const started = Date.now()
  const deadline = started + timeoutMs
  const progress = progressReporter(`Waiting for ${services.join(', ')} to be healthy`)
  try {
    for (;;) {
      const report = await checkHealth(ctx, services)
      if (report.overall_status === 'healthy') return { report, waitedOut: false, dead: null }
      const dead = services.includes('bot') ? await botDeadReason(ctx, report.services.bot) : null
      if (dead || Date.now() + 3000 > deadline) return { report, waitedOut: true, dead }
      progress.update(`${Math.round((Date.now() - started) / 1000)}s of ${Math.round(timeoutMs / 1000)}s; ${unhealthyLines(report).join(', ')}`)
      await sleep(3000)
    }
  } finally {
    progress.done()
  }
}

/** "bot: unhealthy (no heartbeat)" for each service that is neither healthy nor absent by design. */
export function unhealthyLines(report: HealthReport): string[] {
  return checked(report.services).flatMap(([name, h]) => (h.status !== 'healthy' && h.status !== 'not_deployed' ? [`${name}: ${h.status} (${h.detail})`] : []))
}

/** More restarts than this and the container is in a loop, whatever its current state says. */
const RESTART_LOOP = 2

/**
 * Certain death, not slowness: the container exited or keeps restarting, or the app's own
 * /health reports that a startup check failed (it runs once; nothing will heal it).
 */
async function botDeadReason(ctx: Context, bot: ServiceHealth | undefined): Promise<string | null> {
  if (!ctx.compose) return null
  const container = await findContainer(ctx.compose, 'bot').catch(() => null)
  return container ? deadReason(container, bot) : null
}

function deadReason(container: ContainerInfo, bot: ServiceHealth | undefined): string | null {
  if (container.status === 'exited' || container.status === 'dead') return `the bot container ${container.status} (exit code ${container.exitCode})`
  if (container.status === 'restarting' || container.restarts >= RESTART_LOOP) return `the bot container is restarting in a loop (${container.restarts} restarts)`
  const reported = typeof bot?.error_message === 'string' ? bot.error_message : ''
  if (/\bstartup\b/i.test(reported)) return `the bot reports a failed startup check: ${reported}`
  return null
}

/** The services a report covers, with their health (a report holds only the services asked for). */
export function checked(results: HealthReport['services']): [Service, ServiceHealth][] {
  return SERVICES.flatMap((service) => {
    const health = results[service]
    return health ? [[service, health] as [Service, ServiceHealth]] : []
  })
}

export function overall(results: HealthReport['services']): HealthReport['overall_status'] {
  const statuses = checked(results).map(([, r]) => r.status)
  if (statuses.includes('unhealthy')) return 'unhealthy'
  if (statuses.includes('degraded')) return 'degraded'
  return 'healthy'
}

async function checkService(ctx: Context, service: Service): Promise<ServiceHealth> {
  if (service === 'postgres' && ctx.db.mode === 'url') return checkUrlPostgres(ctx)
  if (!ctx.compose) return result('unhealthy', null, 'no compose project configured')
  let container: ContainerInfo | null
  try {
    container = await findContainer(ctx.compose, service)
  } catch (error) {
    return result('unhealthy', null, `docker: ${messageOf(error)}`)
  }
  if (!container) return service === 'nginx' ? result('not_deployed', null, 'webhook profile not running') : result('unhealthy', null, 'no container')
  if (container.status !== 'running') return result('unhealthy', null, `connection refused: container ${container.status}`)
  switch (service) {
    case 'bot':
      return checkBot(container)
    case 'postgres':
      return timed(probe`docker exec -i ${container.id} psql -U ${ctx.cfg.POSTGRES_USER} -d ${ctx.cfg.POSTGRES_DB} -Atc 'SELECT 1'`, (out) => out === '1')
    case 'redis':
      return timed(probe`docker exec -i ${container.id} redis-cli ping`, (out) => out === 'PONG')
    case 'nginx':
      return container.health === 'unhealthy' ? result('unhealthy', null, 'docker healthcheck failing') : result('healthy', null, 'process running')
  }
}

function result(status: Status, ms: number | null, detail: string, extra: Record<string, unknown> = {}): ServiceHealth {
  return { status, response_time_ms: ms, detail, timed_out: false, ...extra }
}

/** A probe: a read (it runs under --dry-run), killed at the contract's 10 s limit, its exit code looked at. */
const probe = $read({ nothrow: true, timeoutMs: QUERY_TIMEOUT_MS })

/** Runs a probe and reports its real response time; `ok` judges its trimmed output. */
async function timed(running: ProcessPromise, ok: (stdout: string) => boolean): Promise<ServiceHealth> {
  const started = performance.now()
  try {
    const r = await running
    const ms = Math.round(performance.now() - started)
    if (timedOut(running)) return { ...result('unhealthy', null, `timeout after ${QUERY_TIMEOUT_MS / 1000}s`), timed_out: true }
    if (r.exitCode === 0 && ok(r.stdout.trim())) return result('healthy', ms, `response: ${ms}ms`)
    return result('unhealthy', ms, lastLine(r.stderr || r.stdout) || `exit ${r.exitCode}`)
  } catch (error) {
    return result('unhealthy', null, messageOf(error))
  }
}

async function checkUrlPostgres(ctx: Context): Promise<ServiceHealth> {
  return timed(psql(ctx.db, ctx.db.database, 'SELECT 1', { read: true, nothrow: true, timeoutMs: QUERY_TIMEOUT_MS }), (out) => out === '1')
}

// ---- the bot -----------------------------------------------------------------------------------

// Runs inside the bot container (the bot is Python; its image need not have curl): reads the
// internal /health and, because a polling bot may have no listener, the heartbeat file's age.
const BOT_PROBE = `
import json, os, time, urllib.request, urllib.error
out = {}
started = time.monotonic()
try:
    with urllib.request.urlopen(os.environ.get("HEALTH_URL", "http://127.0.0.1:8000/health"), timeout=9) as r:
        out["body"] = json.loads(r.read())
except urllib.error.HTTPError as e:
    out["body"] = json.loads(e.read() or b"{}")
except Exception as e:
    reason = getattr(e, "reason", e)
    out["error"] = str(reason)
    out["timeout"] = isinstance(reason, TimeoutError) or "timed out" in str(reason)
out["ms"] = int((time.monotonic() - started) * 1000)
try:
    out["heartbeat_age_s"] = round(time.time() - os.stat(os.environ.get("HEARTBEAT_FILE", "/tmp/heartbeat")).st_mtime, 1)
except OSError:
    out["heartbeat_age_s"] = None
print(json.dumps(out))
`

export interface BotProbe {
  body?: Record<string, unknown>
  error?: string
  /** a listener that accepted but never answered: a hung bot, not a missing health server */
  timeout?: boolean
  ms: number
  heartbeat_age_s: number | null
}

async function checkBot(container: ContainerInfo): Promise<ServiceHealth> {
  let answer: BotProbe
  try {
    const running = probe`docker exec -i ${container.id} python3 -c ${BOT_PROBE}`
    const r = await running
    if (timedOut(running)) return { ...result('unhealthy', null, `timeout: /health did not answer within the ${QUERY_TIMEOUT_MS / 1000}s limit`), timed_out: true }
    answer = JSON.parse(r.stdout.trim().split('\n').pop() || '{}') as BotProbe
    if (r.exitCode !== 0 || typeof answer.ms !== 'number') return result('unhealthy', null, `health probe failed: ${lastLine(r.stderr) || `exit ${r.exitCode}`}`)
  } catch (error) {
    return result('unhealthy', null, messageOf(error))
  }
  return deriveBotHealth(answer)
}

/**
 * The data model: healthy when both dependencies answer within 10 s; degraded when one fails but
 * the bot responds; unhealthy when both fail, on a timeout, when the app says so, or when the
 * polling loop's heartbeat is stale.
 */
export function deriveBotHealth(probe: BotProbe): ServiceHealth {
  const heartbeat = { heartbeat_age_s: probe.heartbeat_age_s }
  const stale = probe.heartbeat_age_s === null || probe.heartbeat_age_s > HEARTBEAT_MAX_AGE_S
  const staleText = probe.heartbeat_age_s === null ? 'no heartbeat' : `heartbeat ${Math.round(probe.heartbeat_age_s)}s old`
  const body = probe.body
  if (probe.timeout) return { ...result('unhealthy', null, `timeout: /health did not answer within the ${QUERY_TIMEOUT_MS / 1000}s limit`, heartbeat), timed_out: true }
  if (!body) {
    // No listener: a polling bot without a health server is judged by its heartbeat alone.
    if (stale || probe.heartbeat_age_s === null) return result('unhealthy', null, `/health unreachable (${probe.error ?? 'no answer'}) and ${staleText}`, heartbeat)
    return result('healthy', null, `heartbeat ${Math.round(probe.heartbeat_age_s)}s ago; /health unreachable`, heartbeat)
  }
  const extra = { ...heartbeat, version: body.version ?? null, uptime_seconds: body.uptime_seconds ?? null, postgres_connected: body.postgres_connected ?? null, redis_connected: body.redis_connected ?? null, error_message: body.error_message ?? null }
  const failed = [body.postgres_connected === false && 'postgres', body.redis_connected === false && 'redis'].filter(Boolean) as string[]
  if (probe.ms >= QUERY_TIMEOUT_MS) return { ...result('unhealthy', probe.ms, `timeout: /health took ${probe.ms}ms`, extra), timed_out: true }
  if (failed.length === 2) return result('unhealthy', probe.ms, 'postgres and redis connections failed', extra)
  if (stale) return result('unhealthy', probe.ms, `polling stopped: ${staleText}`, extra)
  if (failed.length === 1) return result('degraded', probe.ms, `${failed[0]} connection failed`, extra)
  if (body.status === 'unhealthy' || body.status === 'degraded') return result(body.status, probe.ms, String(body.error_message ?? `reported ${body.status}`), extra)
  return result('healthy', probe.ms, `response: ${probe.ms}ms`, extra)
}

function lastLine(text: string): string {
  return text.trim().split('\n').pop()?.replace(/^(psql|Error|error): /, '') ?? ''
}

/**
 * Blue-green's gate: one bot container, by id (while two run, the service name is ambiguous).
 * The same probe and the same early end as the health gate; `reason` says why it failed.
 */
export async function waitUntilContainerHealthy(id: string, timeoutMs: number): Promise<{ healthy: boolean; reason: string }> {
  const started = Date.now()
  const progress = progressReporter('Waiting for the new bot container to be healthy')
  try {
    for (;;) {
      const container = (await inspectContainers([id]).catch(() => []))[0]
      if (!container) return { healthy: false, reason: 'the new bot container is gone' }
      const health = container.status === 'running' ? await checkBot(container) : result('unhealthy', null, `container ${container.status}`)
      if (health.status === 'healthy') return { healthy: true, reason: '' }
      const dead = deadReason(container, health)
      if (dead) return { healthy: false, reason: dead }
      if (Date.now() - started + 3000 > timeoutMs) return { healthy: false, reason: `not healthy after ${Math.round(timeoutMs / 1000)}s: bot: ${health.status} (${health.detail})` }
      progress.update(`${Math.round((Date.now() - started) / 1000)}s of ${Math.round(timeoutMs / 1000)}s; bot: ${health.status} (${health.detail})`)
      await sleep(1000)
    }
  } finally {
    progress.done()
  }
}
