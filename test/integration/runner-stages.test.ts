import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { OpsError } from '../../lib/core/errors.ts'
import { addSecretsFrom } from '../../lib/core/redact.ts'
import { CommandFailed, run, runStages, tryRun, type Command } from '../../lib/core/runner.ts'

// Real processes: adjacent commands are joined by a kernel pipe, the way a shell joins them.
class Collect extends Writable {
  text = ''
  override _write(chunk: Buffer, _e: BufferEncoding, done: () => void): void {
    this.text += chunk.toString()
    done()
  }
}

describe('runStages', () => {
  it('joins adjacent commands directly and hands the last one to node', async () => {
    const out = new Collect()
    await runStages([{ argv: ['printf', 'a\\nb\\nc\\n'] }, { argv: ['grep', '-v', 'b'] }, { argv: ['wc', '-l'] }, out], 10_000)
    expect(out.text.trim()).toBe('2')
  })

  it('runs a pipeline of commands only, and a failing last one fails it', async () => {
    await expect(runStages([{ argv: ['printf', 'x'] }, { argv: ['cat'] }], 10_000)).resolves.toBeUndefined()
    await expect(runStages([{ argv: ['printf', 'x'] }, { argv: ['sh', '-c', 'cat >/dev/null; exit 4'] }], 10_000)).rejects.toBeInstanceOf(CommandFailed)
  })

  it('names the command that failed, so a caller can tell the stages apart', async () => {
    const producer: Command = { argv: ['sh', '-c', 'echo partial; echo "not in gzip format" >&2; exit 2'] }
    const error = await runStages([producer, { argv: ['cat'] }, new Collect()], 10_000).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(CommandFailed)
    expect((error as CommandFailed).command).toBe(producer)
    expect((error as CommandFailed).message).toContain('not in gzip format')
  })

  it('a reader that dies early stops an endless writer instead of hanging', async () => {
    const reader: Command = { argv: ['sh', '-c', 'head -c 10 >/dev/null; exit 3'] }
    const error = await runStages([{ argv: ['yes'] }, reader, new Collect()], 20_000).catch((e: unknown) => e)
    // Not the timeout: `yes` got EPIPE because node kept no copy of the pipe's read end.
    expect(error).toBeInstanceOf(CommandFailed)
  })
})

describe('run', () => {
  // Under systemd SHLVL is unset; Debian's bash, started by zx with a socket as stdin, then takes
  // itself for an ssh session and sources ~/.bashrc before every command (100 ms each, and side effects).
  it('runs a command without sourcing ~/.bashrc, even with no SHLVL', async () => {
    const home = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-home-'))
    try {
      fs.writeFileSync(path.join(home, '.bashrc'), 'touch "$HOME/bashrc-was-read"\n')
      await run({ argv: ['true'], env: { HOME: home, SHLVL: '' } })
      expect(fs.existsSync(path.join(home, 'bashrc-was-read'))).toBe(false)
    } finally {
      fs.rmSync(home, { recursive: true, force: true })
    }
  })
})

describe('tryRun (no shell)', () => {
  it('passes every argument as it is: nothing is split, globbed or expanded', async () => {
    const r = await tryRun({ argv: ['printf', '%s|', 'a b', '$HOME', '*', "it's"] })
    expect(r).toEqual({ exitCode: 0, stdout: "a b|$HOME|*|it's|", stderr: '' })
  })

  it('a program that is not installed is exit 127 with a clear line', async () => {
    const r = await tryRun({ argv: ['ttg-no-such-program', '--version'] })
    expect(r.exitCode).toBe(127)
    expect(r.stderr).toMatch(/ttg-no-such-program: command not found/)
  })

  it('its own timeout kills the program and says which command timed out', async () => {
    const error = await tryRun({ argv: ['sleep', '30'], timeoutMs: 300 }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(OpsError)
    expect((error as OpsError).kind).toBe('timeout')
    expect((error as OpsError).message).toBe('Timed out after 0s: sleep 30')
  })

  it('input reaches stdin', async () => {
    expect((await tryRun({ argv: ['cat'], input: 'hello' })).stdout).toBe('hello')
  })

  it('a failure names the whole command, with secrets redacted', async () => {
    addSecretsFrom({ POSTGRES_PASSWORD: 'runner-secret-pw' })
    const error = await run({ argv: ['sh', '-c', 'echo boom >&2; exit 3', 'runner-secret-pw'] }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(CommandFailed)
    expect((error as Error).message).toMatch(/^sh failed: boom \(exit 3: sh -c 'echo boom >&2; exit 3' \S+\)$/)
    expect((error as Error).message).not.toContain('runner-secret-pw')
  })
})
