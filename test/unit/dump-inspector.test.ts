import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, expect, it } from 'vitest'
import { DumpInspector } from '../../lib/db/dump-inspector.ts'
import { discard } from '../../lib/core/streams.ts'

const DUMP = [
  '--',
  '-- PostgreSQL database dump',
  '--',
  '-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)',
  'CREATE TABLE public.users (id integer, bio text);',
  'COPY public.users (id, bio) FROM stdin;',
  '1\tline\\nbreak',
  '2\t\\\\.',
  '3\t\\N',
  '\\.',
  'COPY public."Audit Trail" (id) FROM stdin;',
  '1',
  '\\.',
  'COPY public.empty FROM stdin;',
  '\\.',
  '--',
  '-- PostgreSQL database dump complete',
  '--',
  '',
  '\\unrestrict abc',
  '',
].join('\n')

async function inspect(text: string, chunkSize: number) {
  const inspector = new DumpInspector()
  const bytes = Buffer.from(text)
  const chunks = Array.from({ length: Math.ceil(bytes.length / chunkSize) }, (_, i) => bytes.subarray(i * chunkSize, (i + 1) * chunkSize))
  await pipeline(Readable.from(chunks), inspector, discard())
  return inspector.facts()
}

describe('DumpInspector', () => {
  it.each([1, 3, 7, 64, 1 << 16])('counts COPY rows, version and trailer with %i-byte chunks', async (size) => {
    expect(await inspect(DUMP, size)).toEqual({
      rowCounts: { 'public.users': 3, 'public."Audit Trail"': 1, 'public.empty': 0 },
      pgDumpVersion: '15.20',
      complete: true,
      bytes: Buffer.byteLength(DUMP),
    })
  })
  it('a dump cut short, even inside COPY data, is incomplete', async () => {
    expect((await inspect(DUMP.slice(0, DUMP.indexOf('3\t')), 5)).complete).toBe(false)
    expect((await inspect(DUMP.replace('-- PostgreSQL database dump complete', ''), 5)).complete).toBe(false)
  })
  it('counts a row longer than its line buffer once', async () => {
    const long = DUMP.replace('1\tline\\nbreak', `1\t${'x'.repeat(100_000)}`)
    expect((await inspect(long, 1000)).rowCounts['public.users']).toBe(3)
  })
})
