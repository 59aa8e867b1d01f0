import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { configureLog } from '../../lib/core/log.ts'
import { addSecret } from '../../lib/core/redact.ts'
import { describe as describeCommand } from '../../lib/core/runner.ts'
import { $, $read, setDryRun, timedOut } from '../../lib/core/shell.ts'

// The toolkit's `$` (lib/core/shell.ts): zx's, configured once. Real bash, real files.
let dir: string
let logFile: string
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-shell-'))
  logFile = path.join(dir, 'deployment.log')
  configureLog({ file: logFile, verbose: false })
  setDryRun(false)
})
afterEach(() => {
  setDryRun(false)
  configureLog({ file: null })
  fs.rmSync(dir, { recursive: true, force: true })
})

describe('$ and $read', () => {
  it('quotes every interpolated argument (arrays element by element) and logs the command redacted with its exit code', async () => {
    addSecret('s3cr3t-shell-value')
    const args = ['a b', "it's", '$HOME', 's3cr3t-shell-value']
    const out = await $`printf '%s\n' ${args}`
    expect(out.stdout.split('\n').slice(0, 4)).toEqual(args)
    const logged = fs.readFileSync(logFile, 'utf8')
    expect(logged).toMatch(/DEBUG: \$ printf .*\*\*\*/)
    expect(logged).toMatch(/DEBUG: exit 0 in \d+ ms: printf/)
    expect(logged).not.toContain('s3cr3t-shell-value')
  })

  it('under --dry-run a change is printed and not run; a read still runs', async () => {
    setDryRun(true)
    const marker = path.join(dir, 'changed')
    const printed: string[] = []
    const write = process.stdout.write.bind(process.stdout)
    process.stdout.write = ((chunk: string) => (printed.push(String(chunk)), true)) as typeof process.stdout.write
    try {
      const change = await $`touch ${marker}`
      expect(change.exitCode).toBe(0)
      expect((await $read`echo read-ran`).stdout).toBe('read-ran\n')
    } finally {
      process.stdout.write = write
    }
    expect(fs.existsSync(marker)).toBe(false)
    expect(printed.join('')).toContain(`[dry-run] touch ${marker}`)
  })

  it('a plan prints in one style: `$` lines and runner commands alike quote POSIX-style', async () => {
    setDryRun(true)
    const printed: string[] = []
    const write = process.stdout.write.bind(process.stdout)
    process.stdout.write = ((chunk: string) => (printed.push(String(chunk)), true)) as typeof process.stdout.write
    try {
      await $`docker compose ${['up', '-d', "it's a bot"]}`
    } finally {
      process.stdout.write = write
    }
    expect(printed.join('')).toBe(`[dry-run] docker compose up -d 'it'\\''s a bot'\n`)
    expect(describeCommand({ argv: ['docker', 'compose', 'up', '-d', "it's a bot"] })).toBe(`docker compose up -d 'it'\\''s a bot'`)
  })

  it('a program that is not installed is exit 127 with a clear line', async () => {
    const r = await $read({ nothrow: true })`ttg-no-such-program --version`
    expect(r.exitCode).toBe(127)
    expect(r.stderr).toMatch(/ttg-no-such-program: command not found/)
  })

  it('input reaches stdin, and nothing else does', async () => {
    expect((await $read({ input: 'hello' })`cat`).stdout).toBe('hello')
    expect((await $read`cat`).stdout).toBe('')
  })

  it('bash reads no startup file, even with a socket for stdin', async () => {
    fs.writeFileSync(path.join(dir, '.bashrc'), 'echo BASHRC-READ\n')
    const out = await $({ env: { HOME: dir }, input: 'x' })`cat >/dev/null; echo ran`
    expect(out.stdout).toBe('ran\n')
  })

  it('a failure names the program, the tail of its stderr and the command, redacted', async () => {
    addSecret('pw-in-a-failing-command')
    const failing = $`ls /nonexistent-ttg-path pw-in-a-failing-command`
    await expect(failing).rejects.toThrow(/^ls failed: ls: cannot access .*\(exit 2: ls \/nonexistent-ttg-path \*\*\*\)$/)
    expect((await $({ nothrow: true })`exit 3`).exitCode).toBe(3)
  })

  it('a timeout sends SIGTERM, then SIGKILL to a child that ignores it, and says it timed out', async () => {
    const started = Date.now()
    const stubborn = $({ timeoutMs: 300, nothrow: true })`trap '' TERM; sleep 30`
    const out = await stubborn
    expect(timedOut(stubborn)).toBe(true)
    expect(out.signal).toBe('SIGKILL')
    expect(Date.now() - started).toBeLessThan(15_000)
    await expect($({ timeoutMs: 1000 })`sleep 30`).rejects.toThrow(/^Timed out after 1s: sleep 30$/)
  })
})
