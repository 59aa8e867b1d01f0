import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfig } from '../../lib/core/config.ts'
import { isWebhookMode, PIN_SCRIPT, WORKERS_SCRIPT } from '../../lib/release/bluegreen.ts'
import { webhookProfileProblem } from '../../lib/release/mode.ts'
import { summarize } from '../../bench/webhook.ts'

// Blue-green's scripts run inside nginx's container (its commands are `$` lines in bluegreen.ts).
describe('blue-green commands', () => {
  it('pins nginx with a checked, graceful reload; reads its workers by process title', () => {
    expect(PIN_SCRIPT).toMatch(/nginx -t -q; then rm -f \/etc\/nginx\/conf.d\/bot-pin.inc; exit 1; fi; nginx -s reload$/)
    expect(WORKERS_SCRIPT).toContain('"nginx: worker process"*')
  })
})

describe('webhook mode', () => {
  const envFile = (text: string) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-bg-'))
    fs.writeFileSync(path.join(dir, '.env.production'), text, { mode: 0o600 })
    return { DEPLOY_DIR: dir }
  }
  it('is TELEGRAM_WEBHOOK_URL set, in the env file or the environment, and nothing else', () => {
    expect(isWebhookMode(loadConfig(envFile('TELEGRAM_WEBHOOK_URL=https://bot.example.com/webhook\n')))).toBe(true)
    expect(isWebhookMode(loadConfig({ ...envFile('TELEGRAM_WEBHOOK_URL=\n'), TELEGRAM_WEBHOOK_URL: 'https://bot.example.com/webhook' }))).toBe(true)
    expect(isWebhookMode(loadConfig(envFile('TELEGRAM_WEBHOOK_URL=\n')))).toBe(false)
    // The webhook profile alone is not webhook mode: blue-green would run two pollers (409 Conflict).
    expect(isWebhookMode(loadConfig({ ...envFile('TELEGRAM_WEBHOOK_URL=\n'), COMPOSE_PROFILES: 'monitoring,webhook' }))).toBe(false)
    expect(isWebhookMode(loadConfig(envFile('COMPOSE_PROFILES=webhook\nTELEGRAM_WEBHOOK_URL=\n')))).toBe(false)
  })

  it('the webhook profile without TELEGRAM_WEBHOOK_URL is a contradiction deploy and setup refuse, naming both and what to do', () => {
    const contradiction = loadConfig(envFile('COMPOSE_PROFILES=monitoring, webhook\nTELEGRAM_WEBHOOK_URL=\n'))
    const problem = webhookProfileProblem(contradiction.COMPOSE_PROFILES, isWebhookMode(contradiction), contradiction.envFile)
    expect(problem).toMatch(/^COMPOSE_PROFILES names the webhook profile but TELEGRAM_WEBHOOK_URL is empty/)
    expect(problem).toContain(`set TELEGRAM_WEBHOOK_URL, TELEGRAM_WEBHOOK_SECRET and DOMAIN in ${contradiction.envFile}`)
    expect(problem).toContain('for polling mode take webhook out of COMPOSE_PROFILES')
    const webhook = loadConfig(envFile('COMPOSE_PROFILES=webhook\nTELEGRAM_WEBHOOK_URL=https://bot.example.com/webhook\n'))
    expect(webhookProfileProblem(webhook.COMPOSE_PROFILES, isWebhookMode(webhook), webhook.envFile)).toBeNull()
    expect(webhookProfileProblem('monitoring', false, '/x')).toBeNull()
    expect(webhookProfileProblem(undefined, false, '/x')).toBeNull()
    // nginx's profile still follows the URL alone
    expect(loadConfig(envFile('TELEGRAM_WEBHOOK_URL=https://bot.example.com/webhook\n')).composeProfiles).toEqual(['webhook'])
  })
})

describe('load summary', () => {
  it('counts anything but 2xx as failed, by outcome, and takes percentiles of one window', () => {
    const samples = [
      { at: 0, ms: 5, outcome: 200 },
      { at: 10, ms: 7, outcome: 200 },
      { at: 20, ms: 900, outcome: 502 },
      { at: 30, ms: 1, outcome: 'ECONNRESET' },
      { at: 5000, ms: 50, outcome: 200 },
    ]
    expect(summarize(samples, 0, 1000)).toMatchObject({ sent: 4, failed: 2, failures: { 502: 1, ECONNRESET: 1 }, max: 900 })
    expect(summarize(samples, 1000)).toMatchObject({ sent: 1, failed: 0, p50: 50, p99: 50 })
  })
})
