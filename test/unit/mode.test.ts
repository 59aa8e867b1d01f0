import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { loadConfig, type Config } from '../../lib/core/config.ts'
import type { ComposeProject } from '../../lib/commands/compose.ts'
import { clearWebhook, configuredMode, describeSwitch, envEntryFormat, modeChecks, registerWebhook } from '../../lib/release/mode.ts'
import { webhookStateFile } from '../../lib/release/webhook.ts'
import { startBotApi, type BotApiStandIn } from '../support/bot-api.ts'

// Moving between polling and webhook mode: what Telegram is told, against a local stand-in of the
// Bot API (test/support/bot-api.ts, which answers as Telegram does), and the commands involved.
const TOKEN = '123456:unit-token'
const HOOK = 'https://bot.example.com/webhook'
let api: BotApiStandIn
let dir: string

beforeEach(async () => {
  api = await startBotApi()
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-mode-'))
})
afterEach(async () => {
  await api.close()
  fs.rmSync(dir, { recursive: true, force: true })
})

function config(file: string, env: Record<string, string> = {}): Config {
  fs.writeFileSync(path.join(dir, '.env.production'), `TELEGRAM_BOT_TOKEN=${TOKEN}\n${file}`, { mode: 0o600 })
  return loadConfig({ DEPLOY_DIR: dir, TELEGRAM_API_BASE: api.base, LOG_FILE: path.join(dir, 'log'), ...env })
}

describe('webhook mode: the webhook is set when missing or different, left alone when equal', () => {
  it('sets it with the secret token, then only reads it while nothing changed', async () => {
    const cfg = config(`TELEGRAM_WEBHOOK_URL=${HOOK}\nTELEGRAM_WEBHOOK_SECRET=s3cret_A\n`)
    expect(configuredMode(cfg)).toBe('webhook')
    await registerWebhook(cfg)
    expect(api.callsOf('setWebhook').map((c) => c.body)).toEqual([{ url: HOOK, secret_token: 's3cret_A' }])
    expect(api.calls.every((c) => c.token === TOKEN)).toBe(true)
    await registerWebhook(cfg)
    expect(api.callsOf('setWebhook')).toHaveLength(1)
    expect(api.callsOf('getWebhookInfo')).toHaveLength(2)
    // A new secret: getWebhookInfo cannot show it, the remembered hash can.
    await registerWebhook(config(`TELEGRAM_WEBHOOK_URL=${HOOK}\nTELEGRAM_WEBHOOK_SECRET=s3cret_B\n`))
    expect(api.callsOf('setWebhook').map((c) => c.body.secret_token)).toEqual(['s3cret_A', 's3cret_B'])
    // Pointed elsewhere by someone: put back.
    api.webhook.url = 'https://old.example.com/hook'
    await registerWebhook(cfg)
    expect(api.webhook.url).toBe(HOOK)
  })

  it('does nothing in polling mode, and a Bot API that does not answer is a warning, not a failure', async () => {
    await registerWebhook(config('TELEGRAM_WEBHOOK_URL=\n'))
    expect(api.calls).toEqual([])
    await api.close()
    await expect(registerWebhook(config(`TELEGRAM_WEBHOOK_URL=${HOOK}\nTELEGRAM_WEBHOOK_SECRET=s\n`))).resolves.toBeUndefined()
    api = await startBotApi()
  })
})

describe('polling mode: no webhook may be set (getUpdates answers 409 Conflict while one is)', () => {
  it('leaving webhook mode deletes the webhook, keeping the pending updates; only when one is set', async () => {
    const webhook = config(`TELEGRAM_WEBHOOK_URL=${HOOK}\nTELEGRAM_WEBHOOK_SECRET=s\n`)
    await registerWebhook(webhook)
    expect(fs.existsSync(webhookStateFile(dir))).toBe(true)
    const polling = config('TELEGRAM_WEBHOOK_URL=\n')
    expect(configuredMode(polling)).toBe('polling')
    await clearWebhook(polling, true)
    expect(api.callsOf('deleteWebhook').map((c) => c.body)).toEqual([{ drop_pending_updates: false }])
    expect(api.webhook.url).toBe('')
    expect(fs.existsSync(webhookStateFile(dir))).toBe(false)
    // None set: getWebhookInfo only.
    await clearWebhook(polling, true)
    expect(api.callsOf('deleteWebhook')).toHaveLength(1)
    expect(api.callsOf('getWebhookInfo').length).toBeGreaterThan(1)
  })

  it('a polling stack never talks to Telegram, unless this toolkit registered a webhook it has not seen deleted', async () => {
    const polling = config('TELEGRAM_WEBHOOK_URL=\n')
    api.webhook.url = HOOK
    await clearWebhook(polling, false)
    expect(api.calls).toEqual([])
    // A deletion that failed last time (webhook.json still there) is tried again.
    fs.writeFileSync(webhookStateFile(dir), '{}\n')
    await clearWebhook(polling, false)
    expect(api.callsOf('deleteWebhook')).toHaveLength(1)
    expect(api.webhook.url).toBe('')
  })

  it('in webhook mode it never deletes anything', async () => {
    api.webhook.url = HOOK
    await clearWebhook(config(`TELEGRAM_WEBHOOK_URL=${HOOK}\n`), true)
    expect(api.calls).toEqual([])
  })
})

describe("deploy's pre-flight checks of the mode", () => {
  const p: ComposeProject = { flavor: 'v2', files: ['/t/docker-compose.prod.yml'], project: 'toogoodtogo', envFile: null, profiles: [] }
  it('webhook mode checks that nginx can start; a switch into polling mode, that Telegram answers', async () => {
    expect(modeChecks(config(`TELEGRAM_WEBHOOK_URL=${HOOK}\n`), p, { from: 'polling', to: 'webhook' }, 'v1.2.0').map(([name]) => name)).toEqual(['nginx'])
    expect(modeChecks(config(`TELEGRAM_WEBHOOK_URL=${HOOK}\n`), p, null, 'v1.2.0').map(([name]) => name)).toEqual(['nginx'])
    expect(modeChecks(config('TELEGRAM_WEBHOOK_URL=\n'), p, null, 'v1.2.0')).toEqual([])
    const [telegram] = modeChecks(config('TELEGRAM_WEBHOOK_URL=\n'), p, { from: 'webhook', to: 'polling' }, 'v1.2.0')
    expect(telegram?.[0]).toBe('telegram')
    expect(await telegram?.[1]()).toBeNull()
    expect(api.callsOf('deleteWebhook')).toEqual([])
    await api.close()
    expect(await telegram?.[1]()).toMatch(/^Telegram must delete the webhook for polling mode, and getWebhookInfo failed: /)
    api = await startBotApi()
  })
})

describe('the commands', () => {

  it('reads one variable of the running bot, never its whole environment', () => {
    expect(envEntryFormat('TELEGRAM_WEBHOOK_URL')).toBe('{{range .Config.Env}}{{if eq (index (split . "=") 0) "TELEGRAM_WEBHOOK_URL"}}{{println .}}{{end}}{{end}}')
  })

  it('says what a switch does, in its order', () => {
    expect(describeSwitch({ from: 'polling', to: 'webhook' })).toMatch(/polling bot stops first, nginx starts, then the webhook is set/)
    expect(describeSwitch({ from: 'webhook', to: 'polling' })).toMatch(/webhook is deleted, the webhook bot stops first, nginx is removed/)
  })
})
