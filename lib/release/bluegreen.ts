import { sleep } from 'zx'
import { composeBase, composeEnv, type ComposeProject } from '../commands/compose.ts'
import { findContainer, serviceContainers, type ContainerInfo } from '../commands/docker.ts'
import type { Config } from '../core/config.ts'
import { OpsError, messageOf } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { $, $read, isDryRun } from '../core/shell.ts'
import { waitUntilContainerHealthy } from '../stack/health.ts'

// Blue-green for a webhook bot: Telegram POSTs every update to nginx, so the new version can start
// beside the old one and take over without one refused request. Polling mode never comes here
// (two pollers get 409 Conflict). The steps, all on the compose project's own containers:
//   1. nginx is pinned to the running container (conf.d/bot-pin.inc, graceful reload), so the new
//      one gets nothing before it has passed the gate;
//   2. `up --scale bot=2 --no-recreate` starts the new version beside it (docker-rollout's move);
//   3. the new container is gated by id; a failure removes it and the old one never noticed;
//   4. nginx is pinned to the new container; the old workers finish the requests they hold;
//   5. the old container stops (its grace period) and is removed: one bot container again.
// The pin stays until the next switch (a stop-then-start one pins the container it started):
// each reload makes nginx's exiting workers close their clients' keep-alive connections, and a
// request racing that close is reset, so a switch from a pinned nginx reloads once. The pin lives
// in the nginx container's own filesystem: a new nginx container starts unpinned and finds the
// bot by its service name.

/**
 * Webhook mode: TELEGRAM_WEBHOOK_URL set (in the env file or the environment), and nothing else.
 * The webhook profile alone (COMPOSE_PROFILES) is not: a polling bot switched blue-green would be
 * two pollers side by side (409 Conflict); deploy refuses that contradiction (mode.ts).
 */
export function isWebhookMode(cfg: Pick<Config, 'webhookUrl'>): boolean {
  return cfg.webhookUrl !== ''
}

/** The new version never became healthy: it was removed, and the old one serves as before. */
export class OldVersionServing extends OpsError {
  constructor(
    reason: string,
    /** 'health': the new container failed its gate; 'switch': it could not be started */
    readonly stage: 'switch' | 'health',
  ) {
    super(stage === 'health' ? 'health_failed' : 'command_failed', reason)
  }
}

const PIN_FILE = '/etc/nginx/conf.d/bot-pin.inc'

/**
 * Writes the pin and reloads only if nginx accepts the whole configuration; a refused pin is
 * removed again, so a later restart never trips on it. A reload is graceful: old workers finish
 * their requests, new ones take the new config.
 */
export const PIN_SCRIPT = `set -e; cat > ${PIN_FILE}.new; mv ${PIN_FILE}.new ${PIN_FILE}; if ! nginx -t -q; then rm -f ${PIN_FILE}; exit 1; fi; nginx -s reload`

/** pids of nginx's worker processes (the process title nginx gives them); no ps in every image. */
export const WORKERS_SCRIPT = `for d in /proc/[0-9]*; do case "$(tr '\\0' ' ' < $d/cmdline 2>/dev/null)" in "nginx: worker process"*) echo \${d#/proc/};; esac; done`

/** Longer than nginx's proxy_read_timeout (30 s): a worker holding a request waits for its answer. */
const DRAIN_TIMEOUT_MS = 40_000

async function workers(nginxId: string): Promise<string[]> {
  return (await $read({ timeoutMs: 30_000 })`docker exec -i ${nginxId} sh -c ${WORKERS_SCRIPT}`).stdout.split('\n').map((s) => s.trim()).filter(Boolean)
}

/**
 * Points nginx at one container and returns once every worker that ran the previous config has
 * exited: from then on no request can reach a container the pin left out.
 */
async function pinNginx(nginxId: string, containerId: string): Promise<void> {
  // the container's name (`proj-bot-2`), which Docker's DNS resolves on the project's network
  const name = (await $read({ timeoutMs: 30_000 })`docker inspect --format '{{.Name}}' ${containerId}`).stdout.trim().replace(/^\//, '')
  // Every reload costs the clients a few keep-alive connections (an exiting worker closes each
  // one after its current answer): pinned already, nothing to do.
  if ((await pinnedName(nginxId)) === name) return
  const before = isDryRun() ? [] : await workers(nginxId)
  await $({ input: `set $bot_webhook http://${name}:8080;\n`, timeoutMs: 30_000 })`docker exec -i ${nginxId} sh -c ${PIN_SCRIPT}`
  await drained(nginxId, before)
}

async function pinnedName(nginxId: string): Promise<string | null> {
  const pin = await $read({ timeoutMs: 30_000 })`docker exec -i ${nginxId} sh -c ${`cat ${PIN_FILE} 2>/dev/null || true`}`
  return /http:\/\/([^:/]+):8080/.exec(pin.stdout)?.[1] ?? null
}

/**
 * After a stop-then-start switch in webhook mode: nginx is pinned to the one bot container now
 * running (the bot was down anyway, so this reload costs nothing), so the next blue-green switch
 * starts pinned and reloads only once.
 */
export async function pinRunningBot(p: ComposeProject): Promise<void> {
  const nginx = await findContainer(p, 'nginx')
  const bot = await findContainer(p, 'bot')
  if (nginx?.status === 'running' && bot?.status === 'running') await pinNginx(nginx.id, bot.id)
}

async function drained(nginxId: string, oldWorkers: string[]): Promise<void> {
  const deadline = Date.now() + DRAIN_TIMEOUT_MS
  while (oldWorkers.length && Date.now() < deadline) {
    const now = await workers(nginxId).catch((): string[] => [])
    if (!oldWorkers.some((pid) => now.includes(pid))) return
    await sleep(200)
  }
  if (oldWorkers.length) log.warn(`nginx workers ${oldWorkers.join(', ')} still finishing requests after ${DRAIN_TIMEOUT_MS / 1000}s; going on`)
}

export interface BlueGreenPlan {
  old: ContainerInfo
  nginx: ContainerInfo | null
}

/**
 * What a blue-green switch starts from: exactly one running bot container (none: nothing serves,
 * so stop-then-start loses nothing; two: an interrupted switch, which stop-then-start settles).
 * Leftover stopped containers of the service are removed: `up --scale` would start them instead.
 */
export async function blueGreenPlan(p: ComposeProject): Promise<BlueGreenPlan | null> {
  const bots = await serviceContainers(p, 'bot')
  const running = bots.filter((c) => c.status === 'running')
  const [old] = running
  if (running.length !== 1 || !old) {
    log.info(`Blue-green needs one running bot container, found ${running.length}: stopping and starting instead`)
    return null
  }
  for (const leftover of bots.filter((c) => c.status !== 'running')) await $`docker rm --force ${leftover.id}`
  const nginx = await findContainer(p, 'nginx')
  return { old, nginx: nginx?.status === 'running' ? nginx : null }
}

/**
 * Starts `tag` beside the running bot, moves nginx to it once it is healthy, drains and removes
 * the old one. Throws OldVersionServing when the new one fails its gate (it is removed first).
 */
export async function blueGreenSwitch(cfg: Config, p: ComposeProject, tag: string, plan: BlueGreenPlan): Promise<void> {
  const { old, nginx } = plan
  log.info(`Starting ${tag} beside the running bot (blue-green)${nginx ? '' : '; nginx is not running'}`)
  if (nginx) await pinNginx(nginx.id, old.id)
  let fresh: ContainerInfo
  try {
    // Not --no-deps: compose v2 hashes the config without depends_on then, and the next plain
    // `up` would recreate the new container. --no-recreate: the running one stays as it is.
    await $({ env: composeEnv(p, { APP_VERSION: tag }), timeoutMs: 5 * 60_000 })`${composeBase(p)} up -d --no-recreate --scale bot=2 bot`
    if (isDryRun()) return
    const started = (await serviceContainers(p, 'bot')).find((c) => c.id !== old.id)
    if (!started) throw new OpsError('command_failed', 'compose started no second bot container')
    const gate = await waitUntilContainerHealthy(started.id, cfg.HEALTH_CHECK_TIMEOUT * 1000)
    if (!gate.healthy) throw new OldVersionServing(gate.reason, 'health')
    fresh = started
  } catch (error) {
    // The old container never stopped serving (nginx stays pinned to it): take the new one away.
    const extra = (await serviceContainers(p, 'bot').catch((): ContainerInfo[] => [])).filter((c) => c.id !== old.id)
    for (const c of extra) await $`docker rm --force ${c.id}`.catch((e) => log.warn(`Could not remove the new bot container ${c.id.slice(0, 12)}: ${messageOf(e)}`))
    throw error instanceof OldVersionServing ? error : new OldVersionServing(messageOf(error), 'switch')
  }
  log.info(`${tag} is healthy; sending new updates to it and draining the old container`)
  if (nginx) await pinNginx(nginx.id, fresh.id)
  await $({ timeoutMs: (cfg.STOP_TIMEOUT + 60) * 1000 })`docker stop --time ${cfg.STOP_TIMEOUT} ${old.id}`
  await $`docker rm --force ${old.id}`
  // The pin stays: the next switch then starts from it without a reload of its own.
}
