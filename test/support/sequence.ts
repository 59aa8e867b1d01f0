import { afterEach, beforeEach } from 'vitest'

/**
 * One stack or droplet carries a describe block's whole flow: once a step fails, the later ones
 * would only wait out their timeouts on a broken host (they are reported as skipped).
 */
export function stopAfterFirstFailure(): void {
  let broken = false
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') broken = true
  })
  beforeEach((ctx) => {
    if (broken) ctx.skip()
  })
}
