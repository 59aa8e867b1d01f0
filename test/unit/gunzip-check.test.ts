import { randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { gzipSync } from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { GunzipCheck } from '../../lib/streams.ts'

// Random hex compresses about 2:1, like a real dump, and is large enough for several chunks.
const PLAIN = Buffer.from(randomBytes(3 << 20).toString('hex'))
const GZIPPED = gzipSync(PLAIN)

/** Streams `bytes` through a GunzipCheck in `size`-byte chunks; returns what came out and the count. */
async function check(bytes: Buffer, size = 65536): Promise<{ out: Buffer; inflated: number }> {
  const chunks: Buffer[] = []
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size))
  const checker = new GunzipCheck()
  const out: Buffer[] = []
  await pipeline(Readable.from(chunks), checker, async function* (source) {
    for await (const chunk of source) out.push(chunk as Buffer)
  })
  return { out: Buffer.concat(out), inflated: checker.bytes }
}

describe('GunzipCheck', () => {
  it.each([997, 65536, 1 << 20])('passes gzip bytes through unchanged and counts what they inflate to (%i-byte chunks)', async (size) => {
    const { out, inflated } = await check(GZIPPED, size)
    expect(out.equals(GZIPPED)).toBe(true)
    expect(inflated).toBe(PLAIN.length)
  })

  it('fails on a stream cut short', async () => {
    await expect(check(GZIPPED.subarray(0, GZIPPED.length - 1000))).rejects.toThrow(/unexpected end/i)
  })

  it('fails on a flipped byte (deflate data or CRC)', async () => {
    const damaged = Buffer.from(GZIPPED)
    damaged[Math.floor(damaged.length / 2)]! ^= 0xff
    await expect(check(damaged)).rejects.toThrow()
  })

  it('fails on bytes that are not gzip at all', async () => {
    await expect(check(PLAIN.subarray(0, 100_000))).rejects.toThrow(/header/i)
  })
})
