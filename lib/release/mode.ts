import fs from 'node:fs'
import { composeBase, composeEnv, type ComposeProject } from '../commands/compose.ts'
import { findContainer, serviceContainers } from '../commands/docker.ts'
import { namedProfiles, type Config } from '../core/config.ts'
import { messageOf } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { $, $read, isDryRun } from '../core/shell.ts'
import { deleteWebhookIfSet, ensureWebhook, webhookDelivery, webhookStateFile } from './webhook.ts'

// Polling or webhook: TELEGRAM_WEBHOOK_URL alone decides (set: webhook mode, nginx in front and
// Telegram's webhook pointing at it; empty: long polling, no nginx, no webhook). Moving between
// the two is a deploy after editing .env.production: deploy tells the switch by the running bot's
// own TELEGRAM_WEBHOOK_URL, stops the old bot first (a poller and a webhook bot side by side
// would each miss what the other gets), brings nginx up or removes it, and sets Telegram's webhook
// or deletes it. Everything here is shared by deploy, rollback and setup-droplet.
export type BotMode = 'polling' | 'webhook'

export function configuredMode(cfg: Pick<Config, 'webhookUrl'>): BotMode {
  return cfg.webhookUrl ? 'webhook' : 'polling'
}

/**
 * COMPOSE_PROFILES naming `webhook` while TELEGRAM_WEBHOOK_URL is empty: nginx in front of a
 * polling bot that no webhook reaches, or (before webhook mode meant the URL alone) two pollers
 * side by side. Refused by deploy and setup-droplet before anything changes; null when consistent.
 */
export function webhookProfileProblem(composeProfiles: string | undefined, webhookMode: boolean, envFile: string): string | null {
  if (webhookMode || !namedProfiles(composeProfiles).includes('webhook')) return null
  return `COMPOSE_PROFILES names the webhook profile but TELEGRAM_WEBHOOK_URL is empty: webhook mode is TELEGRAM_WEBHOOK_URL alone (nginx's profile follows it). For webhook mode set TELEGRAM_WEBHOOK_URL, TELEGRAM_WEBHOOK_SECRET and DOMAIN in ${envFile}; for polling mode take webhook out of COMPOSE_PROFILES. Nothing was changed`
}

/**
 * `docker inspect`'s format for `NAME=value` when the container was created with NAME in its
 * environment, else nothing. One variable, not the whole environment: that holds the bot's secrets.
 */
export function envEntryFormat(name: string): string {
  return `{{range .Config.Env}}{{if eq (index (split . "=") 0) "${name}"}}{{println .}}{{end}}{{end}}`
}

/** The mode the running bot container was started in (its TELEGRAM_WEBHOOK_URL); null when none runs. */
export async function runningMode(p: ComposeProject): Promise<BotMode | null> {
  const bot = await findContainer(p, 'bot')
  if (bot?.status !== 'running') return null
  const entry = (await $read({ timeoutMs: 30_000 })`docker inspect --format ${envEntryFormat('TELEGRAM_WEBHOOK_URL')} ${bot.id}`).stdout.trim()
  return entry.slice(entry.indexOf('=') + 1) ? 'webhook' : 'polling'
}

export interface ModeSwitch {
  from: BotMode
  to: BotMode
}

/** The running bot is in the other mode than .env.production says: the next switch moves it. */
export async function pendingModeSwitch(cfg: Config, p: ComposeProject): Promise<ModeSwitch | null> {
  const from = await runningMode(p)
  const to = configuredMode(cfg)
  return from && from !== to ? { from, to } : null
}

export function describeSwitch(s: ModeSwitch): string {
  return s.to === 'webhook'
    ? 'Switching from polling to webhook mode (TELEGRAM_WEBHOOK_URL is set): the polling bot stops first, nginx starts, then the webhook is set'
    : 'Switching from webhook to polling mode (TELEGRAM_WEBHOOK_URL is empty): the webhook is deleted, the webhook bot stops first, nginx is removed'
}

/**
 * Pre-flight checks of the mode, each returning the problem or null. Webhook mode while nginx is
 * not running (a switch into it, or nginx down): nginx must start with this configuration, its
 * certificate above all (certbot's files are root's, so nginx itself reads them, in a throwaway
 * container). A switch into polling mode: Telegram must answer, or the webhook that makes every
 * getUpdates fail could not be deleted.
 */
export function modeChecks(cfg: Config, p: ComposeProject, s: ModeSwitch | null, tag: string): [string, () => Promise<string | null>][] {
  const checks: [string, () => Promise<string | null>][] = []
  if (configuredMode(cfg) === 'webhook') {
    checks.push(['nginx', async () => {
      if ((await findContainer(p, 'nginx'))?.status === 'running') return null
      // In a throwaway container (no port published), its templates rendered first as at a real
      // start. It creates a container (and may pull nginx's image): a dry run only prints it.
      const test = await $({ env: composeEnv(p, { APP_VERSION: tag }), timeoutMs: 5 * 60_000, nothrow: true })`${composeBase(p)} run --rm --no-deps -T nginx nginx -t -q`
      if (test.exitCode === 0) return null
      const lines = `${test.stderr}\n${test.stdout}`.split('\n').map((l) => l.trim()).filter(Boolean)
      const why = lines.find((l) => l.includes('[emerg]')) ?? lines.at(-1) ?? `exit ${test.exitCode}`
      return `nginx would not start in webhook mode: ${why} (a certificate for DOMAIN is needed first: README, "Moving between polling and webhook mode")`
    }])
  }
  if (s?.to === 'polling') {
    checks.push(['telegram', async () => {
      const token = cfg.TELEGRAM_BOT_TOKEN
      if (!token) return 'TELEGRAM_BOT_TOKEN is not set: the webhook cannot be deleted'
      return webhookDelivery({ apiBase: cfg.TELEGRAM_API_BASE, token }).then(() => null, (e: unknown) => `Telegram must delete the webhook for polling mode, and getWebhookInfo failed: ${messageOf(e)}`)
    }])
  }
  return checks
}

/**
 * Webhook mode, once the bot and nginx serve: Telegram's webhook points at TELEGRAM_WEBHOOK_URL
 * with TELEGRAM_WEBHOOK_SECRET (setWebhook only when either differs). A failure is a warning:
 * the release runs and is healthy, and the next deploy tries again.
 */
export async function registerWebhook(cfg: Config): Promise<void> {
  const token = cfg.TELEGRAM_BOT_TOKEN
  if (!cfg.webhookUrl || !token) return
  if (isDryRun()) {
    log.info('[dry-run] would set Telegram\'s webhook to TELEGRAM_WEBHOOK_URL if it differs')
    return
  }
  try {
    const outcome = await ensureWebhook({ apiBase: cfg.TELEGRAM_API_BASE, token, url: cfg.webhookUrl, secret: cfg.webhookSecret, stateFile: webhookStateFile(cfg.DEPLOY_DIR) })
    // The URL itself is not logged: it may carry a secret path (the log redacts it anyway).
    log.info(outcome === 'set' ? 'Telegram webhook set to TELEGRAM_WEBHOOK_URL' : 'Telegram webhook already points at TELEGRAM_WEBHOOK_URL')
  } catch (error) {
    log.warn(`Could not check or set the Telegram webhook: ${messageOf(error)}; the next deploy tries again`)
  }
}

/**
 * Polling mode, before a poller starts: no webhook may be set (409 Conflict on every getUpdates).
 * Deleted first, so the updates that arrive while the webhook bot stops wait at Telegram for the
 * poller. Telegram is asked only when there can be one: leaving webhook mode, or a registration
 * this toolkit made and has not seen deleted (webhook.json); a polling stack never talks to it.
 */
export async function clearWebhook(cfg: Config, leavingWebhookMode: boolean): Promise<void> {
  const token = cfg.TELEGRAM_BOT_TOKEN
  const stateFile = webhookStateFile(cfg.DEPLOY_DIR)
  if (cfg.webhookUrl || !token || !(leavingWebhookMode || fs.existsSync(stateFile))) return
  if (isDryRun()) {
    log.info('[dry-run] would delete Telegram\'s webhook if one is set (polling mode)')
    return
  }
  try {
    const outcome = await deleteWebhookIfSet({ apiBase: cfg.TELEGRAM_API_BASE, token, stateFile })
    log.info(outcome === 'deleted' ? 'Telegram webhook deleted: polling mode' : 'Telegram has no webhook set: polling mode')
  } catch (error) {
    log.warn(`Could not delete the Telegram webhook: ${messageOf(error)}; the bot gets 409 Conflict on getUpdates until it is deleted (the next deploy tries again)`)
  }
}

/**
 * Polling mode has no nginx. `up --remove-orphans` leaves the containers of a disabled profile
 * alone, so after a switch out of webhook mode nginx is stopped and removed here.
 */
export async function removeNginx(p: ComposeProject): Promise<void> {
  for (const nginx of await serviceContainers(p, 'nginx')) {
    log.info('Removing nginx: polling mode has no public ingress')
    await $({ timeoutMs: 70_000 })`docker stop --time 10 ${nginx.id}`
    await $`docker rm --force ${nginx.id}`
  }
}

