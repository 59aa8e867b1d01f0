import { describe, expect, it } from 'vitest'
import { OpsError } from '../../lib/core/errors.ts'
import { CommandFailed, runStages } from '../../lib/core/runner.ts'

// Real processes (issue 22 item 6): a stage that ignores SIGTERM at its timeout is killed after the
// grace period instead of hanging the backup; a death by signal N is reported as 128+N.
describe('runStages ends what it started', () => {
  it('escalates to SIGKILL when a stage ignores SIGTERM at its timeout', async () => {
    const started = Date.now()
    const error = await runStages([{ argv: ['bash', '-c', 'trap "" TERM; sleep 60'] }], 300, 500).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(OpsError)
    expect((error as OpsError).kind).toBe('timeout')
    // 0.3 s timeout + 0.5 s grace, far from the 60 s the stage would have taken
    expect(Date.now() - started).toBeLessThan(5_000)
  })

  it('a stage that ends on SIGTERM needs no SIGKILL', async () => {
    const started = Date.now()
    const error = await runStages([{ argv: ['sleep', '60'] }], 300, 30_000).catch((e: unknown) => e)
    expect((error as OpsError).kind).toBe('timeout')
    expect(Date.now() - started).toBeLessThan(5_000)
  })

  it('reports a death by signal N as exit 128+N', async () => {
    const error = await runStages([{ argv: ['sh', '-c', 'kill -USR1 $$'] }], 10_000).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(CommandFailed)
    expect((error as CommandFailed).message).toContain('exit 138')
    const killed = await runStages([{ argv: ['printf', 'x'] }, { argv: ['sh', '-c', 'kill -KILL $$'] }], 10_000).catch((e: unknown) => e)
    expect((killed as CommandFailed).message).toContain('exit 137')
  })
})
