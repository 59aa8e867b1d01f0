import { describe, expect, it } from 'vitest'
import { deriveBotHealth, overall } from '../../lib/stack/health.ts'

const fine = { status: 'healthy', postgres_connected: true, redis_connected: true, version: 'v1.0.0' }

describe('bot health derivation (data model)', () => {
  it('healthy when both dependencies answer and the heartbeat is fresh', () => {
    expect(deriveBotHealth({ body: fine, ms: 45, heartbeat_age_s: 1 })).toMatchObject({ status: 'healthy', detail: 'response: 45ms', response_time_ms: 45 })
  })
  it('degraded when one dependency fails but the bot responds', () => {
    expect(deriveBotHealth({ body: { ...fine, status: 'degraded', redis_connected: false }, ms: 30, heartbeat_age_s: 1 })).toMatchObject({ status: 'degraded', detail: 'redis connection failed' })
  })
  it('unhealthy when both fail, when polling stopped, or when the app says so', () => {
    expect(deriveBotHealth({ body: { ...fine, postgres_connected: false, redis_connected: false }, ms: 30, heartbeat_age_s: 1 }).status).toBe('unhealthy')
    expect(deriveBotHealth({ body: fine, ms: 30, heartbeat_age_s: 600 })).toMatchObject({ status: 'unhealthy', detail: 'polling stopped: heartbeat 600s old' })
    expect(deriveBotHealth({ body: { ...fine, status: 'unhealthy', error_message: 'startup: secret missing' }, ms: 30, heartbeat_age_s: 1 })).toMatchObject({ status: 'unhealthy', detail: 'startup: secret missing' })
  })
  it('a /health that times out is unhealthy and marks the timeout (exit 2)', () => {
    expect(deriveBotHealth({ error: 'timed out', timeout: true, ms: 9000, heartbeat_age_s: 3 })).toMatchObject({ status: 'unhealthy', timed_out: true })
    expect(deriveBotHealth({ body: fine, ms: 10_500, heartbeat_age_s: 1 })).toMatchObject({ status: 'unhealthy', timed_out: true })
  })
  it('a polling bot without a listener is judged by its heartbeat', () => {
    expect(deriveBotHealth({ error: 'Connection refused', ms: 2, heartbeat_age_s: 2 }).status).toBe('healthy')
    expect(deriveBotHealth({ error: 'Connection refused', ms: 2, heartbeat_age_s: null })).toMatchObject({ status: 'unhealthy', detail: '/health unreachable (Connection refused) and no heartbeat' })
  })
})

describe('overall status', () => {
  const s = (status: 'healthy' | 'degraded' | 'unhealthy' | 'not_deployed') => ({ status, response_time_ms: null, detail: '', timed_out: false })
  it('is the worst service; nginx not deployed is not a failure', () => {
    expect(overall({ bot: s('healthy'), nginx: s('not_deployed') })).toBe('healthy')
    expect(overall({ bot: s('degraded'), redis: s('healthy') })).toBe('degraded')
    expect(overall({ bot: s('degraded'), redis: s('unhealthy') })).toBe('unhealthy')
  })
})
