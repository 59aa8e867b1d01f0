import { createHash } from 'node:crypto'
import { Transform, Writable, type TransformCallback } from 'node:stream'

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
