import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { recipientsOf } from '../../lib/offsite/identity.ts'
import { isAgeRecipient } from '../../lib/core/offsite-config.ts'
import { generateKeyPair, identityFileContent, identityNotice } from '../../lib/offsite/key-pair.ts'
import { requireCommands } from '../support/require-commands.ts'
import { tempDir } from '../support/scripts.ts'

// The key pair setup-droplet generates must work with the `age` binary every copy goes through
// (Debian 12's age 1.1 cannot use post-quantum keys): encrypt to the public key, decrypt with the
// identity file exactly as setup writes it.
const work = tempDir('ttg-setup-keys-')
afterAll(() => fs.rmSync(work, { recursive: true, force: true }))

describe("setup-droplet's age key pair", () => {
  it('is an X25519 pair that Debian age encrypts to and decrypts with, from the file setup writes', async () => {
    requireCommands({ age: 'age' })
    const pair = await generateKeyPair()
    expect(pair.identity).toMatch(/^AGE-SECRET-KEY-1[0-9A-Z]+$/)
    expect(isAgeRecipient(pair.recipient)).toBe(true)
    const file = path.join(work, 'backup-age-identity.txt')
    fs.writeFileSync(file, identityFileContent(pair.identity, pair.recipient, '2026-12-02T03:00:00Z'), { mode: 0o600 })
    expect(await recipientsOf(file)).toEqual([pair.recipient])

    const plain = path.join(work, 'plain.txt')
    fs.writeFileSync(plain, 'every row of the shop\n')
    const sealed = path.join(work, 'plain.txt.age')
    execFileSync('age', ['--encrypt', '--recipient', pair.recipient, '--output', sealed, plain])
    expect(execFileSync('age', ['--decrypt', '--identity', file, sealed], { encoding: 'utf8' })).toBe('every row of the shop\n')

    const notice = identityNotice(pair.identity, pair.recipient, file)
    expect(notice).toContain(pair.identity)
    expect(notice).toContain('off this droplet')
  })
})
