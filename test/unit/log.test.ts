import { afterEach, describe, expect, it } from 'vitest'
import { formatLine } from '../../lib/core/log.ts'
import { addSecretsFrom, clearSecretsForTests, redact } from '../../lib/core/redact.ts'

afterEach(() => clearSecretsForTests())

describe('log lines', () => {
  it('are exactly `[YYYY-MM-DD HH:MM:SS] LEVEL: message` in UTC', () => {
    expect(formatLine('INFO', 'Backup complete: /x', new Date('2025-12-28T03:01:55.123Z'))).toBe('[2025-12-28 03:01:55] INFO: Backup complete: /x')
  })
  it('fold a multi-line message onto one line', () => {
    expect(formatLine('ERROR', 'psql failed:\n  ERROR:  boom\n', new Date(0))).toBe('[1970-01-01 00:00:00] ERROR: psql failed: ERROR:  boom')
  })
})

describe('redaction', () => {
  it('hides secret-named values from the environment and .env.production', () => {
    addSecretsFrom({ TELEGRAM_BOT_TOKEN: '123456:ABC-def_ghi', POSTGRES_PASSWORD: 'hunter22', STRIPE_API_KEY: 'sk_live_xyz', LOG_LEVEL: 'INFO' })
    expect(redact('token 123456:ABC-def_ghi pw hunter22 key sk_live_xyz level INFO')).toBe('token *** pw *** key *** level INFO')
  })
  it('hides the password inside any URL, even one never registered', () => {
    expect(redact('postgresql://app:s3cr%40t@db:5432/x and redis://:pw123@redis:6379')).toBe('postgresql://app:***@db:5432/x and redis://:***@redis:6379')
  })
  it('hides the decoded form of a URL-encoded password too', () => {
    addSecretsFrom({ DATABASE_URL: 'postgresql://app:s3cr%40t@db/x' })
    expect(redact('PGPASSWORD=s3cr@t')).toBe('PGPASSWORD=***')
  })
  it("a directory holding secrets is named, not hidden; a webhook URL is hidden", () => {
    addSecretsFrom({ ALERTMANAGER_SECRETS_DIR: '/opt/toogoodtogo/monitoring-secrets', ALERT_WEBHOOK_URL: 'https://hooks.example.com/T0/B0/xyz' })
    expect(redact('wrote https://hooks.example.com/T0/B0/xyz to /opt/toogoodtogo/monitoring-secrets/slack_webhook_url')).toBe('wrote *** to /opt/toogoodtogo/monitoring-secrets/slack_webhook_url')
  })
  it('leaves very short values alone so ordinary words survive', () => {
    addSecretsFrom({ SOME_TOKEN: 'on' })
    expect(redact('turned on')).toBe('turned on')
  })
})
