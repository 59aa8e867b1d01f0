import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { gzipSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { DumpInspector, type DumpFacts } from '../../lib/db/dump-inspector.ts'
import { GunzipCheck } from '../../lib/core/streams.ts'

// A dump of random hex rows: it compresses about 2:1, like a real one, and spans many chunks.
const ROWS = 40_000
const PLAIN = Buffer.from(
  [
    '-- Dumped by pg_dump version 15.20',
    'COPY public.messages (id, body) FROM stdin;',
    ...Array.from({ length: ROWS }, (_, i) => `${i}\t${randomBytes(40).toString('hex')}`),
    '\\.',
    '-- PostgreSQL database dump complete',
    '',
  ].join('\n'),
)
const GZIPPED = gzipSync(PLAIN)

/** Streams `bytes` through a GunzipCheck in `size`-byte chunks; returns what came out and what was inspected. */
async function check(bytes: Buffer, size = 65536): Promise<{ out: Buffer; facts: DumpFacts }> {
  const chunks: Buffer[] = []
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size))
  const inspector = new DumpInspector()
  const out: Buffer[] = []
  await pipeline(Readable.from(chunks), new GunzipCheck(inspector), async function* (source) {
    for await (const chunk of source) out.push(chunk as Buffer)
  })
  return { out: Buffer.concat(out), facts: inspector.facts() }
}

describe('GunzipCheck', () => {
  it.each([997, 65536, 1 << 20])('passes gzip bytes through unchanged and inspects what they inflate to (%i-byte chunks)', async (size) => {
    const { out, facts } = await check(GZIPPED, size)
    expect(out.equals(GZIPPED)).toBe(true)
    expect(facts).toEqual({ rowCounts: { 'public.messages': ROWS }, pgDumpVersion: '15.20', complete: true, bytes: PLAIN.length })
  })

  it('fails on a stream cut short', async () => {
    await expect(check(GZIPPED.subarray(0, GZIPPED.length - 1000))).rejects.toThrow(/unexpected end/i)
  })

  it('fails on a flipped byte (deflate data or CRC)', async () => {
    const damaged = Buffer.from(GZIPPED)
    damaged[Math.floor(damaged.length / 2)]! ^= 0xff
    // zlib's own verdict on the data, not any error that happens to be thrown
    await expect(check(damaged)).rejects.toMatchObject({ code: 'Z_DATA_ERROR' })
  })

  it('fails on bytes that are not gzip at all', async () => {
    await expect(check(PLAIN.subarray(0, 100_000))).rejects.toThrow(/header/i)
  })
})
