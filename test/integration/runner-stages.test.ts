import { Writable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { CommandFailed, runStages, type Command } from '../../lib/core/runner.ts'

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
