import type { Config } from './config.ts'
import { messageOf } from './errors.ts'
import { log } from './log.ts'
import { redact } from './redact.ts'
import { isDryRun } from './runner.ts'

// Notifications on success, failure and rollback: a Slack-compatible webhook and/or a Telegram
// chat, both optional. A notification that fails is a warning, never a failed deploy.
export async function notify(cfg: Config, text: string): Promise<void> {
  if (isDryRun()) return
  const message = redact(text)
  const sends: Promise<void>[] = []
  if (cfg.NOTIFY_WEBHOOK_URL) sends.push(post('webhook', cfg.NOTIFY_WEBHOOK_URL, { text: message }))
  if (cfg.TELEGRAM_NOTIFY_CHAT_ID && cfg.TELEGRAM_BOT_TOKEN) {
    const url = `${cfg.TELEGRAM_API_BASE.replace(/\/$/, '')}/bot${cfg.TELEGRAM_BOT_TOKEN}/sendMessage`
    sends.push(post('Telegram', url, { chat_id: cfg.TELEGRAM_NOTIFY_CHAT_ID, text: message, disable_web_page_preview: true }))
  }
  await Promise.all(sends)
}

async function post(kind: string, url: string, body: unknown): Promise<void> {
  try {
    const response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    })
    if (!response.ok) log.warn(`${kind} notification failed: HTTP ${response.status}`)
  } catch (error) {
    log.warn(`${kind} notification failed: ${messageOf(error)}`)
  }
}
