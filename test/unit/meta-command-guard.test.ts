import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, expect, it } from 'vitest'
import { MetaCommandGuard } from '../../lib/db/dump-inspector.ts'

// What psql would read after the guard, for every way the dump can be cut into chunks.
async function guarded(text: string, chunkSize: number) {
  const bytes = Buffer.from(text)
  return guardedChunks(Array.from({ length: Math.ceil(bytes.length / chunkSize) }, (_, i) => bytes.subarray(i * chunkSize, (i + 1) * chunkSize)))
}

async function guardedChunks(chunks: Buffer[]): Promise<{ out: string; error: string | null; found: MetaCommandGuard['found'] }> {
  const guard = new MetaCommandGuard()
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

  it('stops a meta-command cut in two at every offset, after COPY data that ends the same way', async () => {
    const before = 'SELECT 1;\nCOPY public.t (id) FROM stdin;\n\\N\n1\n\\.\n'
    const text = `${before}  \\! touch /tmp/PWNED\nSELECT 2;\n`
    const bytes = Buffer.from(text)
    for (let cut = 1; cut < bytes.length; cut++) {
      const { out, error, found } = await guardedChunks([bytes.subarray(0, cut), bytes.subarray(cut)])
      expect({ cut, found, error }).toEqual({ cut, found: { line: 6, command: '\\!' }, error: 'line 6 is the psql meta-command \\!' })
      expect({ cut, out }).toEqual({ cut, out: before })
    }
  })

  it('passes a dump cut in two at every offset exactly as whole', async () => {
    const bytes = Buffer.from(GENUINE)
    const expected = GENUINE.replace('\\restrict AbC123\n', '').replace('\\unrestrict AbC123\n', '')
    for (let cut = 1; cut < bytes.length; cut++) {
      const { out, error } = await guardedChunks([bytes.subarray(0, cut), bytes.subarray(cut)])
      expect({ cut, out, error }).toEqual({ cut, out: expected, error: null })
    }
  })

  it('judges as a line-by-line reading does, for any lines cut into any chunks', async () => {
    const random = seeded(23)
    for (let round = 0; round < 300; round++) {
      const lines = Array.from({ length: 1 + Math.floor(random() * 12) }, () => TRICKY[Math.floor(random() * TRICKY.length)]!)
      const text = lines.join('\n') + (random() < 0.5 ? '\n' : '')
      const bytes = Buffer.from(text)
      const chunks: Buffer[] = []
      for (let at = 0; at < bytes.length; ) {
        const size = 1 + Math.floor(random() * 8)
        chunks.push(bytes.subarray(at, at + size))
        at += size
      }
      const { out, found } = await guardedChunks(chunks)
      expect({ text, out, found }).toEqual({ text, ...lineByLine(text) })
    }
  })
})

// Lines whose every prefix means something else to the guard.
const TRICKY = ['COPY t FROM stdin;', 'COPY public.t (a, b) FROM stdin;\r', 'COPY', 'CO', 'CREATE TABLE t ();', '\\.', '\\.\r', '\\.x', '\\', '\\N\t1', '\\\\x', '', ' ', '  \\! id', '\t\\echo hi', '\r\\q', '\\restrict k1', '\\unrestrict k1', '\\unrestrict k2', 'x \\! y', '1\t2']

// The guard's rules, as a reading of whole lines states them.
function lineByLine(text: string): { out: string; found: MetaCommandGuard['found'] } {
  const lines = text.split('\n')
  let out = ''
  let inCopy = false
  let key: string | null = null
  let restrictSeen = false
  for (const [i, line] of lines.entries()) {
    const newline = i < lines.length - 1 ? '\n' : ''
    if (!newline && line === '') break
    const rest = line.replace(/^[ \t\f\v\r]*/, '')
    if (inCopy) {
      if (/^\\\.\r?$/.test(line)) inCopy = false
    } else if (!rest.startsWith('\\')) {
      if (/^COPY (.+?)(?: \(.*\))? FROM stdin;$/.test(line.replace(/\r$/, ''))) inCopy = true
    } else {
      const restrict = /^\\restrict ([A-Za-z0-9]+)\r?$/.exec(rest)
      const unrestrict = /^\\unrestrict ([A-Za-z0-9]+)\r?$/.exec(rest)
      if (restrict && !restrictSeen) {
        restrictSeen = true
        key = restrict[1] ?? null
        continue
      }
      if (unrestrict && key !== null && unrestrict[1] === key) {
        key = null
        continue
      }
      return { out, found: { line: i + 1, command: rest.split(/\s/, 1)[0] ?? rest } }
    }
    out += line + newline
  }
  return { out, found: null }
}

/** A small deterministic generator: the same cases on every run. */
function seeded(seed: number): () => number {
  let state = seed
  return () => {
    state = (state * 1103515245 + 12345) % 2147483648
    return state / 2147483648
  }
}

