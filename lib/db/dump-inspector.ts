import { Transform, type TransformCallback } from 'node:stream'

// Watches a plain-format pg_dump stream as it passes, unchanged: the rows of every COPY block (each
// row is one line; COPY escapes newlines inside values), the pg_dump version from the header, and
// the completion trailer that a dump cut short by a crash or a full disk lacks.
const TRAILER = '-- PostgreSQL database dump complete'
// The table name is kept as pg_dump quoted it, so it can go back into SQL as it is.
const COPY_START = /^COPY (.+?)(?: \(.*\))? FROM stdin;$/
const DUMPED_BY = /^-- Dumped by pg_dump version (\S+)/
const MAX_LINE_PREFIX = 4096

export interface DumpFacts {
  rowCounts: Record<string, number>
  pgDumpVersion: string | null
  complete: boolean
  bytes: number
}

export class DumpInspector extends Transform {
  private readonly rowCounts: Record<string, number> = {}
  private pgDumpVersion: string | null = null
  private copyTable: string | null = null
  private pending: Buffer = Buffer.alloc(0)
  private tail = ''
  private bytes = 0
  /** the whole stream went past, not only the part before a failure downstream */
  ended = false

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.observe(chunk)
    done(null, chunk)
  }

  override _flush(done: TransformCallback): void {
    this.observeEnd()
    done()
  }

  /** For a caller that holds the plain dump without streaming it anywhere (see GunzipCheck). */
  observe(chunk: Buffer): void {
    this.bytes += chunk.length
    this.scan(chunk)
    this.tail = (this.tail + chunk.subarray(Math.max(0, chunk.length - 512)).toString('latin1')).slice(-512)
  }

  observeEnd(): void {
    if (this.pending.length > 0) this.line(this.pending)
    this.ended = true
  }

  facts(): DumpFacts {
    return {
      rowCounts: { ...this.rowCounts },
      pgDumpVersion: this.pgDumpVersion,
      complete: this.copyTable === null && this.tail.includes(TRAILER),
      bytes: this.bytes,
    }
  }

  private scan(chunk: Buffer): void {
    let start = 0
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      if (this.pending.length > 0) {
        this.line(Buffer.concat([this.pending, chunk.subarray(start, Math.min(nl, start + MAX_LINE_PREFIX))]))
        this.pending = Buffer.alloc(0)
      } else if (this.copyTable !== null) {
        // Hot path: inside COPY data only the terminator line needs looking at.
        if (nl - start === 2 && chunk[start] === 0x5c && chunk[start + 1] === 0x2e) this.copyTable = null
        else this.rowCounts[this.copyTable]!++
      } else {
        this.line(chunk.subarray(start, Math.min(nl, start + MAX_LINE_PREFIX)))
      }
      start = nl + 1
    }
    if (start < chunk.length && this.pending.length < MAX_LINE_PREFIX) {
      const rest = chunk.subarray(start, start + MAX_LINE_PREFIX - this.pending.length)
      this.pending = Buffer.concat([this.pending, rest])
    }
  }

  private line(bytes: Buffer): void {
    if (this.copyTable !== null) {
      if (bytes.length === 2 && bytes[0] === 0x5c && bytes[1] === 0x2e) this.copyTable = null
      else this.rowCounts[this.copyTable]!++
      return
    }
    const text = bytes.toString('utf8')
    const copy = COPY_START.exec(text)
    if (copy) {
      this.copyTable = copy[1]!
      this.rowCounts[this.copyTable] ??= 0
      return
    }
    const dumpedBy = DUMPED_BY.exec(text)
    if (dumpedBy) this.pgDumpVersion = dumpedBy[1]!
  }
}
