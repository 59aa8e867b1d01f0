import { describe, expect, it } from 'vitest'
import { deliveryProblem, type WebhookDelivery } from '../../lib/release/webhook.ts'

const NOW = new Date('2026-12-02T12:00:00Z')
const URL = 'https://bot.example.com/webhook'
const fine: WebhookDelivery = { url: URL, pendingUpdates: 0, lastErrorAt: null, lastErrorMessage: null }

describe("Telegram's view of webhook delivery", () => {
  it('is fine with no error, or an error older than 5 minutes', () => {
    expect(deliveryProblem(fine, URL, NOW)).toBeNull()
    expect(deliveryProblem({ ...fine, lastErrorAt: new Date('2026-12-02T11:54:59Z'), lastErrorMessage: 'Bad Gateway' }, URL, NOW)).toBeNull()
  })

  it('is a problem with an error in the last 5 minutes, saying when, what and how much waits', () => {
    expect(deliveryProblem({ url: URL, pendingUpdates: 12, lastErrorAt: new Date('2026-12-02T11:59:15Z'), lastErrorMessage: 'Wrong response from the webhook: 502 Bad Gateway' }, URL, NOW))
      .toBe("Telegram's last webhook delivery failed 45s ago: Wrong response from the webhook: 502 Bad Gateway (12 update(s) pending)")
  })

  it('is a problem when the webhook is not set, or set to another URL', () => {
    expect(deliveryProblem({ ...fine, url: '' }, URL, NOW)).toBe("Telegram's webhook is not set, not TELEGRAM_WEBHOOK_URL (deploy.sh sets it)")
    expect(deliveryProblem({ ...fine, url: 'https://old.example.com/hook' }, URL, NOW)).toMatch(/set to https:\/\/old\.example\.com\/hook, not TELEGRAM_WEBHOOK_URL/)
  })
})
