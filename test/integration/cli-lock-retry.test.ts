import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { flag, helpText, parseCli, stringOption, type CliSpec } from '../../lib/core/cli.ts'
import { OpsError } from '../../lib/core/errors.ts'
import { acquireLock, processAlive } from '../../lib/core/lock.ts'
import { retry } from '../../lib/core/retry.ts'

const spec: CliSpec = {
  name: 'demo', summary: 'does a thing', usage: 'demo [type]', positionals: [{ name: 'type', description: 'which' }], maxPositionals: 1,
  options: { yes: { type: 'boolean', short: 'y', description: 'assume yes' } }, exitCodes: [[0, 'ok'], [1, 'failed']], examples: ['demo x'],
}

describe('command line', () => {
  it('rejects unknown flags and extra arguments as usage errors', () => {
    expect(() => parseCli(spec, ['--yse'])).toThrow(/Unknown option '--yse'/)
    expect(() => parseCli(spec, ['a', 'b'])).toThrow(/Unexpected argument: b/)
    expect(parseCli(spec, ['-y', 'a'])).toMatchObject({ help: false, positionals: ['a'], values: { yes: true } })
  })
  it('help lists usage, options, exit codes and examples', () => {
    expect(helpText(spec)).toMatch(/Usage: demo \[type\][\s\S]*-y, --yes[\s\S]*--help[\s\S]*Exit codes:\n {2}0 {2}ok[\s\S]*Examples:\n {2}demo x/)
  })
})

describe('lock', () => {
  it('a second holder fails naming the first; a dead holder is taken over', async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-lock-')), 'deploy.lock')
    const first = await acquireLock(file, { command: 'deploy v1.2.0', waitMs: 0, staleAfterMs: 60_000 })
    await expect(acquireLock(file, { command: 'deploy v1.3.0', waitMs: 0, staleAfterMs: 60_000 })).rejects.toThrow(new RegExp(`pid ${process.pid} on .*"deploy v1.2.0"`))
    first.release()
    expect(fs.existsSync(file)).toBe(false)
    fs.writeFileSync(file, JSON.stringify({ pid: 2 ** 22 + 12345, host: os.hostname(), command: 'deploy v0', started_at: new Date().toISOString() }))
    const second = await acquireLock(file, { command: 'deploy v1.3.0', waitMs: 0, staleAfterMs: 60_000 })
    expect(JSON.parse(fs.readFileSync(file, 'utf8')).command).toBe('deploy v1.3.0')
    second.release()
  })

  it('a holder that was killed but never reaped (a zombie) counts as gone', async () => {
    // `sleep 0.1` exits while its parent, exec'd into `sleep 5`, never waits for it.
    const parent = spawn('bash', ['-c', 'sleep 0.1 & echo $!; exec sleep 5'], { stdio: ['ignore', 'pipe', 'ignore'] })
    const zombie = Number(await new Promise<string>((resolve) => parent.stdout.once('data', (d: Buffer) => resolve(d.toString()))))
    try {
      await new Promise((r) => setTimeout(r, 500))
      expect(fs.readFileSync(`/proc/${zombie}/stat`, 'utf8')).toMatch(/\) Z /)
      expect(processAlive(zombie)).toBe(false)
      expect(processAlive(parent.pid!)).toBe(true)
    } finally {
      parent.kill('SIGKILL')
    }
  })
})

describe('retry', () => {
  it('tries a transient failure 3 times, a permanent one once', async () => {
    let calls = 0
    await expect(retry(async () => { calls++; throw new Error('connection reset') }, { isTransient: () => true, baseDelayMs: 1, what: 'pull' })).rejects.toThrow('connection reset')
    expect(calls).toBe(3)
    calls = 0
    await expect(retry(async () => { calls++; throw new OpsError('usage', 'bad tag') }, { isTransient: () => false, baseDelayMs: 1, what: 'pull' })).rejects.toThrow('bad tag')
    expect(calls).toBe(1)
    calls = 0
    expect(await retry(async () => (++calls < 2 ? Promise.reject(new Error('timeout')) : 'ok'), { isTransient: () => true, baseDelayMs: 1, what: 'pull' })).toBe('ok')
  })
})

describe('what counts as transient', () => {
  it('network trouble yes, a missing tag or a syntax error no', async () => {
    const { looksTransient } = await import('../../lib/core/retry.ts')
    expect(looksTransient(new Error('Get "http://127.0.0.1:5000/v2/": context deadline exceeded'))).toBe(true)
    expect(looksTransient(new Error('dial tcp: connection refused'))).toBe(true)
    expect(looksTransient(new Error('manifest for bot:v9 not found: manifest unknown'))).toBe(false)
  })
})

describe('lock file states', () => {
  const fresh = () => path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-lock-')), 'deploy.lock')

  it('an empty (being written, or unreadable) lock is held until it is old, then taken over', async () => {
    const file = fresh()
    fs.writeFileSync(file, '')
    await expect(acquireLock(file, { command: 'deploy', waitMs: 0, staleAfterMs: 60_000 })).rejects.toThrow(/cannot be read/)
    const old = new Date(Date.now() - 120_000)
    fs.utimesSync(file, old, old)
    const taken = await acquireLock(file, { command: 'deploy', waitMs: 0, staleAfterMs: 60_000 })
    expect(JSON.parse(fs.readFileSync(file, 'utf8')).command).toBe('deploy')
    taken.release()
  })

  it('the lock appears complete: no temp file is left beside it', async () => {
    const file = fresh()
    const lock = await acquireLock(file, { command: 'deploy v1', waitMs: 0, staleAfterMs: 60_000 })
    expect(fs.readdirSync(path.dirname(file))).toEqual(['deploy.lock'])
    expect(JSON.parse(fs.readFileSync(file, 'utf8'))).toMatchObject({ pid: process.pid, command: 'deploy v1' })
    lock.release()
    expect(fs.readdirSync(path.dirname(file))).toEqual([])
  })
})

describe('option names are checked by the compiler', () => {
  const spec = {
    name: 't', summary: '', usage: '', positionals: [], maxPositionals: 0, exitCodes: [], examples: [],
    options: { yes: { type: 'boolean', description: '' }, 'env-file': { type: 'string', description: '' } },
  } satisfies CliSpec

  it('declared names (and --help, --verbose) are accepted; a mistyped one does not compile', () => {
    const cli = parseCli(spec, ['--yes', '--env-file', 'a.env'])
    expect(flag(cli, 'yes')).toBe(true)
    expect(stringOption(cli, 'env-file')).toBe('a.env')
    expect(flag(cli, 'verbose')).toBe(false)
    // @ts-expect-error: `tsc --noEmit` (npm test's first step) fails if this ever compiles
    expect(flag(cli, 'yess')).toBe(false)
  })
})
