import { createHash, createHmac, type Hmac } from 'node:crypto'
import fs from 'node:fs'
import { Transform, type TransformCallback } from 'node:stream'
import type { Measured } from './sidecar.ts'

export interface MeterOptions {
  /** the bytes that must have passed */
  expect?: { measured: Measured; mismatch: (actual: Measured) => Error }
  /** a last check before the stream may end; an error returned fails it instead */
  beforeEnd?: () => Promise<Error | null>
  /** also an HMAC of the bytes, under this key */
  macKey?: Buffer | null
}

/**
 * Passes bytes through unchanged, counting them and hashing them with sha256. A stream whose end
 * fails a check fails at its end instead of ending: whatever reads it (an upload, a .partial file)
 * sees an error, never a clean end, so it is never completed.
 */
export class Meter extends Transform {
  private readonly hash = createHash('sha256')
  private readonly hmac: Hmac | null
  private bytes = 0
  private result: Measured | null = null

  constructor(private readonly options: MeterOptions = {}) {
    super()
    this.hmac = options.macKey ? createHmac('sha256', options.macKey) : null
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk)
    this.hmac?.update(chunk)
    this.bytes += chunk.length
    done(null, chunk)
  }

  override _flush(done: TransformCallback): void {
    const measured = this.measured()
    const expect = this.options.expect
    if (expect && (expect.measured.size !== measured.size || expect.measured.sha256 !== measured.sha256)) return done(expect.mismatch(measured))
    const check = this.options.beforeEnd
    if (!check) return done()
    check().then((error) => done(error), done)
  }

  /** size and sha256 of everything that passed: call it once the stream has ended (it seals the hash) */
  measured(): Measured {
    this.result ??= { size: this.bytes, sha256: this.hash.digest('hex'), ...(this.hmac ? { mac: this.hmac.digest('hex') } : {}) }
    return this.result
  }
}

/**
 * Size and sha256 of a file read on its own through one reused buffer: no garbage for the GC,
 * whatever the size (a stream would leave a dead buffer per chunk).
 */
export async function measureFile(file: string): Promise<Measured> {
  const hash = createHash('sha256')
  const buffer = Buffer.allocUnsafe(1 << 20)
  const handle = await fs.promises.open(file, 'r')
  let size = 0
  try {
    let read: number
    while ((read = (await handle.read(buffer, 0, buffer.length, null)).bytesRead) > 0) {
      hash.update(buffer.subarray(0, read))
      size += read
    }
  } finally {
    await handle.close()
  }
  return { size, sha256: hash.digest('hex') }
}
