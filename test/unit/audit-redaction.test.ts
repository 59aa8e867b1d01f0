import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, expect, it } from 'vitest'
import { formatLine } from '../../lib/core/log.ts'
import { addSecretsFrom, clearSecretsForTests } from '../../lib/core/redact.ts'
import { appendEvent, completeEvent, newEvent, readEvents } from '../../lib/release/deploy-state.ts'

afterEach(() => clearSecretsForTests())

it("a failed migration's raw error reaches the audit log redacted exactly as LOG_FILE redacts it", () => {
  addSecretsFrom({ DATABASE_URL: 'postgresql://bot:pw-in-url-42@postgres:5432/shop', TELEGRAM_BOT_TOKEN: '123456:AAE-secret_token' })
  // What deploy.ts records: the stage and the migration's own stderr, which may quote its settings.
  const raw = 'migration failed: alembic: could not connect to postgresql://bot:pw-in-url-42@postgres:5432/shop (password pw-in-url-42); bot token 123456:AAE-secret_token'
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-audit-')), 'deployments.log')
  appendEvent(file, completeEvent(newEvent('deploy', 'v1.2.3', 'v1.2.2', 'manual'), 'failed', raw))
  const text = fs.readFileSync(file, 'utf8')
  expect(text).not.toContain('pw-in-url-42')
  expect(text).not.toContain('AAE-secret_token')
  const [event] = readEvents(file)
  expect(formatLine('ERROR', raw, new Date(0))).toBe(`[1970-01-01 00:00:00] ERROR: ${event?.error_message}`)
  expect(event?.error_message).toContain('postgresql://bot:***@postgres:5432/shop (password ***); bot token ***')
})
