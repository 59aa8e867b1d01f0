import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, expect, it } from 'vitest'
import { MetaCommandGuard } from '../../lib/db/dump-inspector.ts'

// What psql would read after the guard, for every way the dump can be cut into chunks.
async function guarded(text: string, chunkSize: number): Promise<{ out: string; error: string | null; found: MetaCommandGuard['found'] }> {
  const guard = new MetaCommandGuard()
  const bytes = Buffer.from(text)
  const chunks = Array.from({ length: Math.ceil(bytes.length / chunkSize) }, (_, i) => bytes.subarray(i * chunkSize, (i + 1) * chunkSize))
  const received: Buffer[] = []
  const sink = new Writable({ write: (chunk: Buffer, _e, done) => (received.push(chunk), done()) })
  const error = await pipeline(Readable.from(chunks), guard, sink).then(() => null, (e: Error) => e.message)
  return { out: Buffer.concat(received).toString(), error, found: guard.found }
}

const SIZES = [1, 2, 5, 64, 1 << 16]

const GENUINE = [
  '--',
  '-- PostgreSQL database dump',
  '--',
  '',
  '\\restrict AbC123',
  '',
  'CREATE TABLE public.t (id integer, v text);',
  'COPY public.t (id, v) FROM stdin;',
  '1\t\\N',
  '\\\\! not a command: an escaped backslash in COPY data',
  '2\t\\\\.',
  '\\.',
  'SELECT 1;',
  '',
  '\\unrestrict AbC123',
  '',
].join('\n')

describe('MetaCommandGuard', () => {
  it.each(SIZES)('passes a pg_dump dump without its own \\restrict pair (%i-byte chunks)', async (size) => {
    const { out, error } = await guarded(GENUINE, size)
    expect(error).toBeNull()
    expect(out).toBe(GENUINE.replace('\\restrict AbC123\n', '').replace('\\unrestrict AbC123\n', ''))
  })

  it.each(SIZES)('stops at a meta-command line and passes none of it (%i-byte chunks)', async (size) => {
    const text = 'SELECT 1;\n  \\! touch /tmp/PWNED\nSELECT 2;\n'
    const { out, error, found } = await guarded(text, size)
    expect(found).toEqual({ line: 2, command: '\\!' })
    expect(error).toMatch(/line 2 .*\\!/)
    expect(out).not.toContain('touch')
  })

  it.each(SIZES)('refuses a forged pair, an \\unrestrict with another key, and commands after COPY data (%i-byte chunks)', async (size) => {
    expect((await guarded('\\restrict a\n\\unrestrict b\n', size)).found).toEqual({ line: 2, command: '\\unrestrict' })
    expect((await guarded('\\restrict a\n\\unrestrict a\n\\restrict b\n', size)).found).toEqual({ line: 3, command: '\\restrict' })
    expect((await guarded('COPY t FROM stdin;\n\\N\n\\.\n\\copy t to program x\n', size)).found).toEqual({ line: 4, command: '\\copy' })
    expect((await guarded('SELECT 1;\n\\! echo at the end, no newline', size)).found).toEqual({ line: 2, command: '\\!' })
  })

  it('judges a line too long to hold by its start', async () => {
    const long = `INSERT INTO t VALUES ('${'x'.repeat(20_000)}');\n`
    expect((await guarded(long + 'SELECT 1;\n', 1000)).out).toBe(long + 'SELECT 1;\n')
    expect((await guarded(`\\echo ${'x'.repeat(20_000)}\n`, 1000)).found).toEqual({ line: 1, command: '\\echo' })
  })
})
