import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { runOnPty } from '../support/droplet.ts'
import { ROOT } from '../support/scripts.ts'

// Prompts and confirmations on a real pseudo-terminal (util-linux `script`): what is echoed, what
// the program receives, and how it asks again.
const driver = [path.join(ROOT, 'node_modules/.bin/tsx'), path.join(ROOT, 'test/fixtures/prompt/driver.ts')]
const results = (transcript: string) => [...transcript.matchAll(/RESULT (.*)\r?\n/g)].map((m) => JSON.parse(m[1] ?? 'null'))

describe('prompts on a terminal', () => {
  it('a secret is never echoed, is edited with backspace, and is asked again until valid; an empty answer takes the default; yes confirms, anything else refuses', async () => {
    const r = await runOnPty(driver, [
      { expect: /Token: /, send: 'not-a-token\r' },
      { expect: /Invalid: must look like 123:abc\. Try again\.\r?\nToken: /, send: '987:xyzX\x7f\r' },
      { expect: /Domain \[bot\.example\.com\]: /, send: '\r' },
      { expect: /This replaces the database\. Type "yes" to continue: /, send: 'yes\r' },
      { expect: /Again\? Type "yes" to continue: /, send: 'no\r' },
    ], 60_000)
    expect(results(r.transcript)).toEqual(['987:xyz', 'bot.example.com', 'confirmed', 'refused: Cancelled by the operator; nothing was changed'])
    expect(r.transcript).not.toContain('not-a-token')
    // Before the program prints what it received, the token never appeared on the screen.
    expect(r.transcript.split('RESULT')[0]).not.toContain('987:xyz')
    expect(r.code).toBe(1)
  })

  it('an answer typed ahead of the prompt (a paste) is not lost, and Ctrl-D at an empty prompt refuses', async () => {
    const r = await runOnPty(driver, [{ expect: /Token: /, send: '1:a\rexample.org\r' }, { expect: /continue: /, send: '\x04' }], 60_000)
    expect(results(r.transcript)).toEqual(['1:a', 'example.org', 'refused: End of input at a prompt; nothing more was changed'])
  })

  it('Ctrl-C at a visible prompt (zx question) interrupts as anywhere else: SIGINT, not an answer that never comes (exit 13)', async () => {
    const r = await runOnPty(driver, [{ expect: /Token: /, send: '1:a\r' }, { expect: /Domain \[bot\.example\.com\]: /, send: '\x03' }], 60_000)
    expect(results(r.transcript)).toEqual(['1:a'])
    expect(r.code, r.transcript).toBe(130)
  })
})
