import type { Config } from '../core/config.ts'
import type { Context } from '../stack/context.ts'
import { OpsError } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { $, $read, isDryRun } from '../core/shell.ts'
import type { HealthReport, ServiceHealth } from '../stack/health.ts'
import { requireImage } from '../release/release.ts'
import { isWebhook, serviceName } from './stack.ts'

// A stack's services as Swarm sees them: the state of an update, the tasks that run, a one-off
// job. Swarm marks a task running only once its container's health check passes, so "converged"
// (every wanted replica running the wanted image) is the health gate.

export interface Task {
  id: string
  image: string
  node: string
  state: string
  error: string
}

/** One field of the service's spec or state; a service that does not exist is a non-zero exit. */
function inspect(cfg: Config, service: string, format: string, nothrow = true) {
  return $read({ nothrow, timeoutMs: 30_000 })`docker service inspect --format ${format} ${serviceName(cfg, service)}`
}

/** The tasks Swarm wants running (desired state running), with their current state. */
export async function runningTasks(cfg: Config, service: string): Promise<Task[]> {
  const out = await $read({ nothrow: true, timeoutMs: 30_000 })`docker service ps --no-trunc --filter desired-state=running --format ${'{{.ID}}|{{.Image}}|{{.Node}}|{{.CurrentState}}|{{.Error}}'} ${serviceName(cfg, service)}`
  if (out.exitCode !== 0) return []
  return out.stdout.trim().split('\n').filter(Boolean).map((line) => {
    const [id = '', image = '', node = '', state = '', error = ''] = line.split('|')
    return { id, image: image.replace(/@sha256:[0-9a-f]+$/, ''), node, state: state.split(' ')[0] ?? '', error }
  })
}

/** The image tag the service's spec names now (after a rollback: the previous one). */
export async function specTag(cfg: Config): Promise<string | null> {
  const r = await inspect(cfg, 'bot', '{{.Spec.TaskTemplate.ContainerSpec.Image}}')
  if (r.exitCode !== 0) return null
  return r.stdout.trim().replace(/@sha256:[0-9a-f]+$/, '').split(':').pop() ?? null
}

async function replicas(cfg: Config, service: string): Promise<number> {
  const r = await inspect(cfg, service, '{{if .Spec.Mode.Replicated}}{{.Spec.Mode.Replicated.Replicas}}{{end}}')
  return r.exitCode === 0 ? Number(r.stdout.trim()) || 0 : 0
}

/** Why the stack is not converged on `tag` (null: it is): each service's wanted replicas running. */
export async function notConverged(cfg: Config, tag: string): Promise<string | null> {
  const image = `${requireImage(cfg)}:${tag}`
  const services = isWebhook(cfg) ? ['bot', 'redis', 'nginx'] : ['bot', 'redis']
  const problems: string[] = []
  for (const service of services) {
    const wanted = await replicas(cfg, service)
    const tasks = await runningTasks(cfg, service)
    const ready = tasks.filter((t) => t.state === 'Running' && (service !== 'bot' || t.image === image))
    if (wanted === 0 || ready.length < wanted) {
      const errors = [...new Set(tasks.map((t) => t.error).filter(Boolean))]
      problems.push(`${service}: ${ready.length}/${wanted} running${service === 'bot' ? ` ${tag}` : ''}${errors.length ? ` (${errors.join('; ')})` : ''}`)
    }
  }
  return problems.length ? problems.join('; ') : null
}

export type UpdateOutcome = { state: 'completed' } | { state: 'rolled_back' | 'failed'; message: string }

/**
 * Waits for the bot's update to end, as Swarm reports it (UpdateStatus): completed, or rolled
 * back by Swarm itself (a task that never turned healthy: update_config.failure_action), or
 * paused. A service that was just created has no update: it is done once it converges.
 */
export async function waitForUpdate(ctx: Context, tag: string, since: Date): Promise<UpdateOutcome> {
  if (isDryRun()) return { state: 'completed' }
  const { cfg } = ctx
  // the update's monitor window (20 s) and its delay come on top of the health check's time
  const deadline = Date.now() + (cfg.HEALTH_CHECK_TIMEOUT + 60) * 1000
  for (;;) {
    const status = (await inspect(cfg, 'bot', '{{if .UpdateStatus}}{{.UpdateStatus.State}}|{{.UpdateStatus.Message}}|{{.UpdateStatus.StartedAt.Unix}}{{end}}', false)).stdout.trim()
    const [recorded = '', message = '', startedAt = '0'] = status.split('|')
    // An update that began before this deploy is an earlier one's outcome (a scale is no update).
    const state = Number(startedAt) * 1000 >= since.getTime() - 2000 ? recorded : ''
    if (state === 'rollback_completed') return { state: 'rolled_back', message: message || 'Swarm rolled the update back' }
    if (state === 'paused' || state === 'rollback_paused') return { state: 'failed', message: message || `update ${state}` }
    if ((state === '' || state === 'completed') && (await notConverged(cfg, tag)) === null) return { state: 'completed' }
    if (Date.now() > deadline) return { state: 'failed', message: `not converged after ${cfg.HEALTH_CHECK_TIMEOUT + 60}s: ${(await notConverged(cfg, tag)) ?? state}` }
    await sleep(1000)
  }
}

/** Waits until the stack runs `tag` everywhere it should (after a rollback's deploy or a restart). */
export async function waitConverged(ctx: Context, tag: string): Promise<string | null> {
  if (isDryRun()) return null
  const deadline = Date.now() + ctx.cfg.HEALTH_CHECK_TIMEOUT * 1000
  for (;;) {
    const problem = await notConverged(ctx.cfg, tag)
    if (problem === null || Date.now() > deadline) return problem
    await sleep(1000)
  }
}

/** Sets the bot's replicas and waits until Swarm has them (0: every task stopped, its grace period given). */
export async function scaleBot(cfg: Config, count: number): Promise<void> {
  await $({ timeoutMs: (cfg.STOP_TIMEOUT + cfg.HEALTH_CHECK_TIMEOUT) * 1000 })`docker service scale --detach=false ${`${serviceName(cfg, 'bot')}=${count}`}`
}

export async function botExists(cfg: Config): Promise<boolean> {
  return (await inspect(cfg, 'bot', '{{.ID}}')).exitCode === 0
}

/** What runs now, for a failure message: the bot's running tasks by tag and node. */
export async function describeRunning(cfg: Config): Promise<string> {
  const tasks = (await runningTasks(cfg, 'bot')).filter((t) => t.state === 'Running')
  if (tasks.length === 0) return 'no bot task running'
  const byTag = new Map<string, string[]>()
  for (const t of tasks) byTag.set(t.image.split(':').pop() ?? t.image, [...(byTag.get(t.image.split(':').pop() ?? t.image) ?? []), t.node])
  return [...byTag].map(([tag, nodes]) => `${tag} (${nodes.length} task(s) on ${[...new Set(nodes)].join(', ')})`).join(' and ')
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** The bot stopped for a restore's swap (scaled to 0); returns the replicas to start again. */
export async function stopBotForSwap(ctx: Context): Promise<number> {
  const wanted = await replicas(ctx.cfg, 'bot')
  if (wanted === 0) return 0
  log.info('Stopping application services')
  await scaleBot(ctx.cfg, 0)
  return wanted
}

/** After a restore: the bot's replicas back, and waited for until they run (their health checks pass). */
export async function startBotAgain(ctx: Context, count: number, failurePrefix: string): Promise<void> {
  if (count === 0) return
  log.info('Restarting services')
  await scaleBot(ctx.cfg, count)
  log.info('Services started')
  const tag = await specTag(ctx.cfg)
  const problem = tag === null ? 'the bot service is gone' : await waitConverged(ctx, tag)
  if (problem) throw new OpsError('restore_failed', `${failurePrefix}services are not healthy: ${problem}`)
  log.info('Health checks passed')
}

/** The watch's view of the bot on a Swarm: unhealthy while fewer replicas of `tag` run than wanted. */
export async function botHealthReport(cfg: Config, tag: string): Promise<HealthReport> {
  const problem = await notConverged(cfg, tag)
  const bot: ServiceHealth = { status: problem ? 'unhealthy' : 'healthy', response_time_ms: null, detail: problem ?? 'every replica running', timed_out: false }
  return { timestamp: new Date().toISOString(), overall_status: bot.status === 'healthy' ? 'healthy' : 'unhealthy', services: { bot } }
}
