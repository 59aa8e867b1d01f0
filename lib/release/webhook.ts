import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomic } from '../core/atomic-file.ts'
import { OpsError } from '../core/errors.ts'
import { dayjs } from '../core/time.ts'

// Telegram's webhook registration: it must point at TELEGRAM_WEBHOOK_URL with
// TELEGRAM_WEBHOOK_SECRET as its secret token. getWebhookInfo shows the URL but never the secret,
// so what was last set is remembered as a hash (webhook.json in DEPLOY_DIR): setWebhook is called
// only when either differs, which leaves Telegram's pending updates and delivery state alone.
export interface WebhookTarget {
  apiBase: string
  token: string
  url: string
  secret: string
  /** where the hash of the last registration is kept */
  stateFile: string
}

export function webhookStateFile(deployDir: string): string {
  return path.join(deployDir, 'webhook.json')
}

function fingerprint(url: string, secret: string): string {
  return crypto.createHash('sha256').update(`${url}\n${secret}`).digest('hex')
}

/** Where the Bot API answers, and the bot it answers for. */
export type BotApi = Pick<WebhookTarget, 'apiBase' | 'token'>

async function call(t: BotApi, method: string, body?: Record<string, unknown>): Promise<Record<string, unknown>> {
  const response = await fetch(`${t.apiBase.replace(/\/$/, '')}/bot${t.token}/${method}`, {
    method: body ? 'POST' : 'GET',
    ...(body ? { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(15_000),
  })
  const answer = (await response.json().catch(() => ({}))) as { ok?: boolean; result?: unknown; description?: string }
  if (!response.ok || answer.ok !== true) throw new OpsError('command_failed', `${method}: ${answer.description ?? `HTTP ${response.status}`}`)
  return typeof answer.result === 'object' && answer.result !== null ? (answer.result as Record<string, unknown>) : {}
}

/** 'set' when setWebhook was called, 'unchanged' when Telegram already had this URL and secret. */
export async function ensureWebhook(t: WebhookTarget): Promise<'set' | 'unchanged'> {
  const info = await call(t, 'getWebhookInfo')
  const wanted = fingerprint(t.url, t.secret)
  if (info.url === t.url && readFingerprint(t.stateFile) === wanted) return 'unchanged'
  await call(t, 'setWebhook', { url: t.url, secret_token: t.secret })
  writeFileAtomic(t.stateFile, JSON.stringify({ url: t.url, fingerprint: wanted, set_at: dayjs.utc().toISOString() }) + '\n')
  return 'set'
}

/**
 * Polling mode: Telegram refuses getUpdates while a webhook is set (409 Conflict), so none may be.
 * deleteWebhook only when getWebhookInfo shows one; the pending updates stay for getUpdates. The
 * hash of the last registration goes too: nothing is registered any more.
 */
export async function deleteWebhookIfSet(t: BotApi & Pick<WebhookTarget, 'stateFile'>): Promise<'deleted' | 'none'> {
  const info = await call(t, 'getWebhookInfo')
  const set = typeof info.url === 'string' && info.url !== ''
  if (set) await call(t, 'deleteWebhook', { drop_pending_updates: false })
  fs.rmSync(t.stateFile, { force: true })
  return set ? 'deleted' : 'none'
}

function readFingerprint(file: string): string | null {
  // Missing or unreadable: register again, which is always safe.
  try {
    const value = (JSON.parse(fs.readFileSync(file, 'utf8')) as { fingerprint?: unknown }).fingerprint
    return typeof value === 'string' ? value : null
  } catch {
    return null
  }
}

// ---- delivery, as Telegram reports it (health-check) -------------------------------------------

export interface WebhookDelivery {
  url: string
  pendingUpdates: number
  lastErrorAt: Date | null
  lastErrorMessage: string | null
}

export async function webhookDelivery(t: BotApi): Promise<WebhookDelivery> {
  const info = await call(t, 'getWebhookInfo')
  const errorDate = typeof info.last_error_date === 'number' ? dayjs.unix(info.last_error_date).toDate() : null
  return {
    url: typeof info.url === 'string' ? info.url : '',
    pendingUpdates: typeof info.pending_update_count === 'number' ? info.pending_update_count : 0,
    lastErrorAt: errorDate,
    lastErrorMessage: typeof info.last_error_message === 'string' ? info.last_error_message : null,
  }
}

const RECENT_ERROR_S = 5 * 60

/**
 * A webhook Telegram cannot reach is the most common webhook outage, and only Telegram sees it:
 * a delivery error in the last 5 minutes, or a webhook pointing elsewhere, is a problem.
 */
export function deliveryProblem(d: WebhookDelivery, wantedUrl: string, now: Date): string | null {
  if (d.url !== wantedUrl) return `Telegram's webhook is ${d.url ? `set to ${d.url}` : 'not set'}, not TELEGRAM_WEBHOOK_URL (deploy.sh sets it)`
  if (d.lastErrorAt && dayjs(now).diff(d.lastErrorAt) <= RECENT_ERROR_S * 1000) {
    const ago = Math.max(0, Math.round(dayjs(now).diff(d.lastErrorAt) / 1000))
    return `Telegram's last webhook delivery failed ${ago}s ago: ${d.lastErrorMessage ?? 'no message'} (${d.pendingUpdates} update(s) pending)`
  }
  return null
}
