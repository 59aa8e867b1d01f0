import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { composeScaleUp, type ComposeProject } from '../../lib/commands/compose.ts'
import { containerName, removeContainer, stopContainer } from '../../lib/commands/docker.ts'
import { loadConfig } from '../../lib/core/config.ts'
import { isWebhookMode } from '../../lib/release/bluegreen.ts'
import { pinCommand, readPinCommand, workersCommand } from '../../lib/commands/nginx.ts'
import { webhookProfileProblem } from '../../lib/release/mode.ts'
import { summarize } from '../../bench/webhook.ts'

// Blue-green's command plans: the exact argv the runner executes.
const v2: ComposeProject = { flavor: 'v2', files: ['/opt/toogoodtogo/deployment/deployment/docker-compose.prod.yml'], project: 'toogoodtogo', envFile: '/opt/toogoodtogo/.env.production', profiles: [] }
const v1: ComposeProject = { ...v2, flavor: 'v1', envFile: null }

describe('blue-green commands', () => {
  it('scales the bot to two without recreating the running one, in both compose versions', () => {
    const up = composeScaleUp(v2, 'bot', 2, { APP_VERSION: 'v1.2.0' })
    expect(up.argv).toEqual(['docker', 'compose', '--project-name', 'toogoodtogo', '--file', v2.files[0], '--env-file', '/opt/toogoodtogo/.env.production', 'up', '-d', '--no-recreate', '--scale', 'bot=2', 'bot'])
    expect(up.env).toMatchObject({ APP_VERSION: 'v1.2.0', ENV_FILE: '/opt/toogoodtogo/.env.production' })
    // Not --no-deps: compose v2 would hash the config without depends_on and a later `up` would recreate it.
    expect(up.argv).not.toContain('--no-deps')
    expect(composeScaleUp(v1, 'bot', 2, {}).argv.slice(0, 1)).toEqual(['docker-compose'])
  })

  it('stops one container with its grace period, removes it, reads its DNS name', () => {
    expect(stopContainer('abc', 20).argv).toEqual(['docker', 'stop', '--time', '20', 'abc'])
    expect(stopContainer('abc', 20).timeoutMs).toBe(80_000)
    expect(removeContainer('abc').argv).toEqual(['docker', 'rm', '--force', 'abc'])
    expect(containerName('abc')).toMatchObject({ argv: ['docker', 'inspect', '--format', '{{.Name}}', 'abc'], mutates: false })
  })

  it('pins nginx with a checked, graceful reload; the pin goes on stdin', () => {
    const pin = pinCommand('ngx', 'toogoodtogo-bot-2')
    expect(pin.argv.slice(0, 5)).toEqual(['docker', 'exec', '-i', 'ngx', 'sh'])
    expect(pin.argv[6]).toMatch(/nginx -t -q; then rm -f \/etc\/nginx\/conf.d\/bot-pin.inc; exit 1; fi; nginx -s reload$/)
    expect(pin.input).toBe('set $bot_webhook http://toogoodtogo-bot-2:8080;\n')
    expect(readPinCommand('ngx').mutates).toBe(false)
    expect(workersCommand('ngx')).toMatchObject({ mutates: false })
    expect(workersCommand('ngx').argv[6]).toContain('"nginx: worker process"*')
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
