import http from 'node:http'

// A local stand-in of Telegram's Bot API for what the toolkit and the fixture bot call, answering
// as Telegram does: getWebhookInfo, setWebhook, deleteWebhook, getUpdates (409 Conflict while a
// webhook is set) and sendMessage. Every call is recorded. `host`: 127.0.0.1 for the scripts on
// this machine; the docker bridge's gateway when containers (the bot, a droplet) must reach it.
export interface BotApiCall {
  method: string
  token: string
  body: Record<string, unknown>
  /** the HTTP status it was answered with */
  status: number
}

export interface BotApiStandIn {
  /** TELEGRAM_API_BASE for it */
  base: string
  calls: BotApiCall[]
  /** what Telegram holds: the webhook and its delivery state */
  webhook: { url: string; secret: string; pending: number; errorDate: number; errorMessage: string }
  /** the calls of one method, in order */
  callsOf(method: string): BotApiCall[]
  close(): Promise<void>
}

const CONFLICT = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"

export async function startBotApi(host = '127.0.0.1'): Promise<BotApiStandIn> {
  const api: Omit<BotApiStandIn, 'base' | 'close'> = {
    calls: [],
    webhook: { url: '', secret: '', pending: 0, errorDate: 0, errorMessage: '' },
    callsOf: (method) => api.calls.filter((c) => c.method === method),
  }
  const server = http.createServer((req, res) => {
    let raw = ''
    req.on('data', (d) => (raw += d))
    req.on('end', () => {
      const [, token = '', method = ''] = /^\/bot([^/]*)\/([^/?]*)/.exec(req.url ?? '') ?? []
      let body: Record<string, unknown> = {}
      try {
        body = raw ? (JSON.parse(raw) as Record<string, unknown>) : {}
      } catch {
        // Telegram answers a body it cannot read as if it were empty
      }
      const [status, answer] = respond(api.webhook, method, body)
      api.calls.push({ method, token, body, status })
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(answer))
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, resolve)
  })
  const { port } = server.address() as { port: number }
  return { ...api, base: `http://${host}:${port}`, close: () => new Promise((resolve) => server.close(() => resolve())) }
}

function respond(hook: BotApiStandIn['webhook'], method: string, body: Record<string, unknown>): [number, Record<string, unknown>] {
  switch (method) {
    case 'getWebhookInfo': {
      const errors = hook.errorDate ? { last_error_date: hook.errorDate, last_error_message: hook.errorMessage } : {}
      return [200, { ok: true, result: { url: hook.url, has_custom_certificate: false, pending_update_count: hook.pending, ...errors } }]
    }
    case 'setWebhook':
      hook.url = String(body.url ?? '')
      hook.secret = String(body.secret_token ?? '')
      return [200, { ok: true, result: true, description: 'Webhook was set' }]
    case 'deleteWebhook':
      hook.url = ''
      hook.secret = ''
      return [200, { ok: true, result: true, description: 'Webhook was deleted' }]
    case 'getUpdates':
      return hook.url ? [409, { ok: false, error_code: 409, description: CONFLICT }] : [200, { ok: true, result: [] }]
    case 'sendMessage':
      return [200, { ok: true, result: { message_id: 1 } }]
    default:
      return [404, { ok: false, error_code: 404, description: 'Not Found' }]
  }
}

