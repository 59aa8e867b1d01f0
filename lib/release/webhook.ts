import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { writeFileAtomic } from '../core/atomic-file.ts'
import { OpsError } from '../core/errors.ts'

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

async function call(t: WebhookTarget, method: string, body?: Record<string, unknown>): Promise<Record<string, unknown>> {
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
  writeFileAtomic(t.stateFile, JSON.stringify({ url: t.url, fingerprint: wanted, set_at: new Date().toISOString() }) + '\n')
  return 'set'
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
