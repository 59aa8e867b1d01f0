import { createHash } from 'node:crypto'
import fs from 'node:fs'
import { Transform, Writable, type TransformCallback } from 'node:stream'
import { createGunzip } from 'node:zlib'

/** Passes bytes through unchanged and remembers their sha256. */
export class Sha256Stream extends Transform {
  private readonly hash = createHash('sha256')
  override _transform(chunk: Buffer, _e: BufferEncoding, done: TransformCallback): void {
    this.hash.update(chunk)
    done(null, chunk)
  }
  digest(): string {
    return this.hash.digest('hex')
  }
}

/**
 * The sha256 of a file, read on its own (in parallel with whatever else reads it) through one
 * reused buffer: a stream would leave a dead buffer per chunk for the GC, hundreds of MB of them.
 */
export async function sha256OfFile(file: string): Promise<string> {
  const hash = createHash('sha256')
  const buffer = Buffer.allocUnsafe(1 << 20)
  const handle = await fs.promises.open(file, 'r')
  try {
    let read: number
    while ((read = (await handle.read(buffer, 0, buffer.length, null)).bytesRead) > 0) hash.update(buffer.subarray(0, read))
  } finally {
    await handle.close()
  }
  return hash.digest('hex')
}

/** The end of a pipeline whose output only matters for what was seen on the way. */
export function discard(): Writable {
  return new Writable({ write: (_chunk, _e, done) => done() })
}

/** Keeps psql's `COPY n` tags, in order: the server's count of the rows each COPY stored. */
export class CopyTagCollector extends Writable {
  readonly counts: number[] = []
  private rest = ''
  override _write(chunk: Buffer, _e: BufferEncoding, done: (error?: Error | null) => void): void {
    const lines = (this.rest + chunk.toString('utf8')).split('\n')
    this.rest = lines.pop()!.slice(-256)
    for (const line of lines) this.take(line)
    done()
  }
  override _final(done: (error?: Error | null) => void): void {
    this.take(this.rest)
    done()
  }
  private take(line: string): void {
    const match = /^COPY (\d+)$/.exec(line.trim())
    if (match) this.counts.push(Number(match[1]))
  }
}

/** What GunzipCheck hands the inflated bytes to (lib/db's DumpInspector): core knows only this much of it. */
export interface PlainObserver {
  observe(chunk: Buffer): void
  observeEnd(): void
}

/**
 * Passes gzip bytes through unchanged while inflating a copy of them into `inspector`: a file
 * written through it was proven to decompress, and what it decompresses to was inspected (rows,
 * trailer), without reading it back. A corrupt stream, a bad CRC or a cut-off end is an error.
 */
export class GunzipCheck extends Transform {
  // 1 MB output buffers: a dump inflates to about twice its size, and with 64 KB buffers the
  // allocations and collections cost about a second of CPU per GB that pigz, alongside, could use.
  private readonly inflater = createGunzip({ chunkSize: 1 << 20 })
  private failure: Error | null = null
  /** the callback of the chunk the inflater holds: an inflater that fails may never call back */
  private waiting: (() => void) | null = null

  constructor(inspector: PlainObserver) {
    super()
    this.inflater.on('data', (chunk: Buffer) => inspector.observe(chunk))
    this.inflater.on('end', () => inspector.observeEnd())
    this.inflater.on('error', (error) => {
      this.failure ??= error
      this.release()
    })
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, done: TransformCallback): void {
    if (this.failure) return done(this.failure)
    // Call back once the inflater has taken the chunk: its pace is the pace of the pipeline.
    this.waiting = () => (this.failure ? done(this.failure) : done(null, chunk))
    this.inflater.write(chunk, () => this.release())
  }

  override _flush(done: TransformCallback): void {
    if (this.failure) return done(this.failure)
    this.waiting = () => done(this.failure)
    this.inflater.once('end', () => this.release())
    this.inflater.end()
  }

  private release(): void {
    const waiting = this.waiting
    this.waiting = null
    waiting?.()
  }
}
