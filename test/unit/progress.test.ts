import { afterEach, describe, expect, it, vi } from 'vitest'
import { configureLog } from '../../lib/core/log.ts'
import { progressReporter } from '../../lib/core/progress.ts'

// Long work shows life: redrawn in place on a terminal, a plain line at most every 30 s elsewhere.
afterEach(() => {
  vi.useRealTimers()
  vi.restoreAllMocks()
})

describe('progress', () => {
  it('on a terminal: one status line redrawn in place on stderr, cleared at the end', () => {
    const written: string[] = []
    const tty = { isTTY: true, write: (s: string) => written.push(s) } as unknown as NodeJS.WriteStream
    const p = progressReporter('Dumping', tty)
    p.update('10MB, 5MB/s')
    p.update('11MB, 5MB/s') // within 250 ms: not redrawn
    p.done()
    expect(written).toEqual(['\r\x1b[2KDumping: 10MB, 5MB/s', '\r\x1b[2K'])
  })

  it('without a terminal: a log line at most every 30 s, never on stdout when it carries --json', () => {
    vi.useFakeTimers()
    vi.setSystemTime(new Date('2026-12-02T10:00:00Z'))
    configureLog({ file: null, stdoutIsData: true })
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true)
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation(() => true)
    const pipe = { isTTY: false, write: () => true } as unknown as NodeJS.WriteStream
    const p = progressReporter('Waiting for bot to be healthy', pipe)
    p.update('3s')
    vi.setSystemTime(new Date('2026-12-02T10:00:31Z'))
    p.update('31s')
    vi.setSystemTime(new Date('2026-12-02T10:00:40Z'))
    p.update('40s')
    p.done()
    const lines = stderr.mock.calls.map((c) => String(c[0]))
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/INFO: Waiting for bot to be healthy: 31s\n$/)
    expect(stdout).not.toHaveBeenCalled()
    configureLog({ stdoutIsData: false })
  })
})
