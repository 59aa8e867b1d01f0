import { sleep } from 'zx'
import { log } from './log.ts'
import { messageOf } from './errors.ts'

export interface RetryOptions {
  attempts?: number
  baseDelayMs?: number
  /** only failures this returns true for are tried again; anything else fails at once */
  isTransient: (error: unknown) => boolean
  what: string
}

// The contract: transient (network) errors are tried 3 times with exponential backoff. Not zx's
// retry: that one retries every failure; this one only what looksTransient calls transient, logged.
export async function retry<T>(fn: () => Promise<T>, options: RetryOptions): Promise<T> {
  const attempts = options.attempts ?? 3
  const base = options.baseDelayMs ?? 2000
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn()
    } catch (error) {
      if (attempt >= attempts || !options.isTransient(error)) throw error
      const delay = base * 2 ** (attempt - 1)
      log.warn(`${options.what} failed (attempt ${attempt}/${attempts}): ${messageOf(error)}; retrying in ${Math.round(delay / 1000)}s`)
      await sleep(delay)
    }
  }
}

const TRANSIENT = /(timeout|timed out|deadline exceeded|temporar|connection (reset|refused)|network|EAI_AGAIN|ECONNRESET|ETIMEDOUT|TLS handshake|i\/o timeout|503|502|504|too many requests)/i

export function looksTransient(error: unknown): boolean {
  return TRANSIENT.test(messageOf(error))
}
