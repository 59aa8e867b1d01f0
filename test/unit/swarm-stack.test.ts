import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfig } from '../../lib/core/config.ts'
import { type Context } from '../../lib/stack/context.ts'
import { stackDeployEnv, usesSwarm, writeStackFiles } from '../../lib/swarm/stack.ts'

function configWith(lines: string[]) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-swarm-'))
  const file = path.join(dir, '.env.production')
  fs.writeFileSync(file, [
    'BOT_IMAGE=registry.example.com/bot', 'TELEGRAM_BOT_TOKEN=123:secret_token', 'DATABASE_URL=postgresql://bot:pw0rd@db.example.com:5432/shop',
    'REDIS_URL=redis://redis:6379/0', 'STRIPE_API_KEY=sk_x', 'POSTGRES_PASSWORD=superpw', 'DB_MODE=url', ...lines, '',
  ].join('\n'), { mode: 0o600 })
  return { dir, cfg: loadConfig({ ENV_FILE: file, DEPLOY_DIR: dir, COMPOSE_PROJECT_NAME: 'shop' }) }
}

describe('the Swarm stack', () => {
  it('ORCHESTRATOR is validated with the rest of the configuration, from .env.production or the environment', async () => {
    const { cfg } = configWith(['ORCHESTRATOR=swarm'])
    expect(cfg.ORCHESTRATOR).toBe('swarm')
    expect(await usesSwarm(cfg)).toBe(true)
    expect(await usesSwarm({ ...cfg, ORCHESTRATOR: 'compose' })).toBe(false)
    expect(() => loadConfig({ ENV_FILE: '/nonexistent', ORCHESTRATOR: 'kubernetes' })).toThrow(/Invalid ORCHESTRATOR="kubernetes"/)
  })

  it('the bot gets its env file without the token and the database URL, which become secrets versioned by their content', () => {
    const { dir, cfg } = configWith(['ORCHESTRATOR=swarm'])
    const files = writeStackFiles(cfg)
    const botEnv = fs.readFileSync(files.SWARM_BOT_ENV_FILE, 'utf8')
    expect(botEnv).toContain('STRIPE_API_KEY=sk_x')
    expect(botEnv).toContain('REDIS_URL=redis://redis:6379/0')
    expect(botEnv).not.toMatch(/TELEGRAM_BOT_TOKEN|DATABASE_URL|POSTGRES_PASSWORD|ORCHESTRATOR/)
    expect(fs.readFileSync(path.join(files.SWARM_SECRETS_DIR, 'telegram_bot_token'), 'utf8')).toBe('123:secret_token')
    expect(fs.statSync(path.join(files.SWARM_SECRETS_DIR, 'database_url')).mode & 0o077).toBe(0)
    fs.appendFileSync(path.join(dir, '.env.production'), 'TELEGRAM_BOT_TOKEN=123:new_token\n')
    expect(writeStackFiles(cfg).SWARM_SECRETS_VERSION).not.toBe(files.SWARM_SECRETS_VERSION)
  })

  it('webhook mode: start-first with BOT_REPLICAS and nginx; polling mode: stop-first, one poller, no nginx', () => {
    const webhook = configWith(['TELEGRAM_WEBHOOK_URL=https://bot.example.com/webhook', 'BOT_REPLICAS=3'])
    expect(stackDeployEnv({ cfg: webhook.cfg } as Context, 'v1.2.0')).toMatchObject({ APP_VERSION: 'v1.2.0', BOT_IMAGE: 'registry.example.com/bot', BOT_UPDATE_ORDER: 'start-first', BOT_REPLICAS: '3', NGINX_REPLICAS: '1', BOT_DRAIN_SECONDS: '6', TELEGRAM_WEBHOOK_URL: 'https://bot.example.com/webhook' })
    const polling = configWith([])
    expect(stackDeployEnv({ cfg: polling.cfg } as Context, 'v1.2.0')).toMatchObject({ BOT_UPDATE_ORDER: 'stop-first', BOT_REPLICAS: '1', NGINX_REPLICAS: '0', BOT_DRAIN_SECONDS: '0', TELEGRAM_WEBHOOK_URL: '' })
  })
})
