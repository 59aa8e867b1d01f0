import fs from 'node:fs'
import path from 'node:path'
import type { Config } from './config.ts'
import { readEnvFile } from './env-file.ts'
import { messageOf } from './errors.ts'
import { log } from './log.ts'
import { addSecretsFrom, redact } from './redact.ts'
import { isDryRun } from './shell.ts'

// Notifications on success, failure and rollback: a Slack-compatible webhook and/or a Telegram
// chat, both optional. A notification that fails is a warning, never a failed deploy.

/** The settings notify reads: a Config has them, and so has channelsFrom when no Config could load. */
export type Channels = Pick<Config, 'NOTIFY_WEBHOOK_URL' | 'TELEGRAM_NOTIFY_CHAT_ID' | 'TELEGRAM_BOT_TOKEN' | 'TELEGRAM_API_BASE'>

/** notifications that reached at least one channel in this process: a failure told needs no second telling */
let delivered = 0

export async function notify(cfg: Channels, text: string): Promise<void> {
  if (isDryRun()) return
  const message = redact(text)
  const sends: Promise<boolean>[] = []
  if (cfg.NOTIFY_WEBHOOK_URL) sends.push(post('webhook', cfg.NOTIFY_WEBHOOK_URL, { text: message }))
  if (cfg.TELEGRAM_NOTIFY_CHAT_ID && cfg.TELEGRAM_BOT_TOKEN) {
    const url = `${cfg.TELEGRAM_API_BASE.replace(/\/$/, '')}/bot${cfg.TELEGRAM_BOT_TOKEN}/sendMessage`
    sends.push(post('Telegram', url, { chat_id: cfg.TELEGRAM_NOTIFY_CHAT_ID, text: message, disable_web_page_preview: true }))
  }
  if ((await Promise.all(sends)).some(Boolean)) delivered++
}

export function notificationsDelivered(): number {
  return delivered
}

async function post(kind: string, url: string, body: unknown): Promise<boolean> {
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    })
    if (!response.ok) log.warn(`${kind} notification failed: HTTP ${response.status}`)
    return response.ok
  } catch (error) {
    log.warn(`${kind} notification failed: ${messageOf(error)}`)
    return false
  }
}

/**
 * The channels from the environment and .env.production, read on their own: a failure to load
 * the whole configuration (a typo in another variable) is itself a failure to tell. A value that
 * is not a URL or chat id is left out rather than trusted.
 */
export function channelsFrom(env: NodeJS.ProcessEnv = process.env): Channels {
  let file: Record<string, string> = {}
  try {
    file = readEnvFile(env.ENV_FILE || path.join(env.DEPLOY_DIR || '/opt/toogoodtogo', '.env.production')) ?? {}
  } catch {
    // unreadable: the environment alone
  }
  addSecretsFrom(file)
  const value = (name: keyof Channels): string | undefined => env[name] || file[name] || undefined
  const url = (name: keyof Channels): string | undefined => {
    const given = value(name)
    return given && /^https?:\/\/[^\s]+$/.test(given) && URL.canParse(given) ? given : undefined
  }
  const chat = value('TELEGRAM_NOTIFY_CHAT_ID')
  return {
    NOTIFY_WEBHOOK_URL: url('NOTIFY_WEBHOOK_URL'),
    TELEGRAM_NOTIFY_CHAT_ID: chat && /^-?\d+$|^@\w+$/.test(chat) ? chat : undefined,
    TELEGRAM_BOT_TOKEN: value('TELEGRAM_BOT_TOKEN'),
    TELEGRAM_API_BASE: url('TELEGRAM_API_BASE') ?? 'https://api.telegram.org',
  }
}

/**
 * Under systemd (RuntimeDirectory= and the invocation id it sets): a marker saying this run's
 * failure has been told, which the unit's OnFailure= notifier (deployment/systemd/notify-failure)
 * reads so that the operator does not hear of it twice.
 */
export function markFailureTold(env: NodeJS.ProcessEnv = process.env): void {
  const dir = env.RUNTIME_DIRECTORY?.split(':')[0]
  const invocation = env.INVOCATION_ID
  if (!dir || !invocation || !/^[0-9a-f]{32}$/.test(invocation)) return
  try {
    fs.writeFileSync(path.join(dir, `told-${invocation}`), '', { mode: 0o644 })
  } catch (error) {
    log.warn(`Could not mark the failure as notified (${messageOf(error)}): the unit's failure notifier may tell it again`)
  }
}
