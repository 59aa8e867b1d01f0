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

/** A psql meta-command found in a dump: the line (1-based) and the command, as the error names them. */
export interface MetaCommand {
  line: number
  command: string
}

// pg_dump 15.14+ opens a plain dump with `\restrict KEY` and closes it with `\unrestrict KEY`.
const PG_DUMP_RESTRICT = /^\\restrict ([A-Za-z0-9]+)\r?$/
const PG_DUMP_UNRESTRICT = /^\\unrestrict ([A-Za-z0-9]+)\r?$/
const NEWLINE = 0x0a
const BACKSLASH = 0x5c
const COPY_PREFIX = Buffer.from('COPY ')
/** COPY data's terminator, `\.` (and `\.\r`): the longest line start that may still turn out to be one */
const COPY_END = Buffer.from('\\.\r')

/** The bytes psql skips before a backslash that starts a meta-command: space, \t, \f, \v, \r. */
function isLeadingSpace(byte: number | undefined): boolean {
  return byte === 0x20 || byte === 0x09 || byte === 0x0c || byte === 0x0b || byte === 0x0d
}

/** `bytes` is `whole` or the start of it. */
function isStartOf(bytes: Buffer, whole: Buffer): boolean {
  return bytes.length <= whole.length && whole.subarray(0, bytes.length).equals(bytes)
}

type Verdict = 'pass' | 'drop' | 'reject' | 'undecided'

/**
 * Passes a plain dump on to psql with no psql meta-command in it: a line outside COPY data that
 * starts with a backslash stops the stream (`found` names it) before a byte of that line is passed
 * on. pg_dump's own `\restrict KEY` / `\unrestrict KEY` pair is taken out: psql runs the restore
 * under a key of the restorer's (psqlRestore), which the dump's pair would only collide with.
 * A line is held back only while its start could still make it one of those (or a COPY header or
 * terminator); a line longer than MAX_LINE_PREFIX is judged by its start, which is where a
 * meta-command line shows itself. A backslash in the middle of a line is psql's to refuse, under
 * that key.
 *
 * The dump is scanned as bytes, never decoded: it is nearly all COPY rows, where only a line that
 * starts with a backslash needs a second look, so the chunks go on to psql as they came.
 */
export class MetaCommandGuard extends Transform {
  /** the first meta-command line, once seen: the stream failed with it */
  found: MetaCommand | null = null
  private inCopy = false
  /** the number (1-based) of the line the scan is in */
  private lineNo = 1
  /** the start of the current line, held back (not passed on) until it is judged */
  private held: Buffer | null = null
  /** the current line was judged harmless by its start: the rest of it passes as it comes */
  private passing = false
  private restrictKey: string | null = null
  private restrictSeen = false

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    /** where the bytes judged harmless, and not yet passed on, begin */
    let from = 0
    let pos = 0
    if (this.passing) {
      const nl = chunk.indexOf(NEWLINE)
      if (nl === -1) return done(null, chunk)
      this.passing = false
      this.lineNo++
      pos = nl + 1
    }
    // At the top of this loop, pos is where a line starts.
    while (pos < chunk.length) {
      const first = chunk[pos]
      if (this.held === null && first !== BACKSLASH && (this.inCopy || (first !== COPY_PREFIX[0] && !isLeadingSpace(first)))) {
        // Hot path: a COPY row, or a statement line that is neither a COPY header nor indented.
        const nl = chunk.indexOf(NEWLINE, pos)
        if (nl === -1) {
          this.passing = true
          break
        }
        this.lineNo++
        pos = nl + 1
        continue
      }
      const nl = chunk.indexOf(NEWLINE, pos)
      const end = nl === -1 ? chunk.length : nl
      const held = this.held
      const start = held ? Buffer.concat([held, chunk.subarray(pos, Math.min(end, pos + MAX_LINE_PREFIX - held.length))]) : chunk.subarray(pos, Math.min(end, pos + MAX_LINE_PREFIX))
      const verdict = this.judge(start, nl !== -1)
      if (verdict === 'reject') {
        if (pos > from) this.push(chunk.subarray(from, pos))
        return done(this.rejection())
      }
      if (verdict === 'undecided') {
        if (pos > from) this.push(chunk.subarray(from, pos))
        this.held = Buffer.from(start)
        return done()
      }
      this.held = null
      if (verdict === 'drop') {
        if (pos > from) this.push(chunk.subarray(from, pos))
        from = nl + 1 // a dropped line is always whole: nl was found
      } else if (held) {
        this.push(held)
      }
      if (nl === -1) {
        this.passing = true
        break
      }
      this.lineNo++
      pos = nl + 1
    }
    if (chunk.length > from) this.push(from === 0 ? chunk : chunk.subarray(from))
    done()
  }

  override _flush(done: TransformCallback): void {
    const held = this.held
    if (held) {
      const verdict = this.judge(held, true)
      if (verdict === 'reject') return done(this.rejection())
      if (verdict === 'pass') this.push(held)
    }
    done()
  }

  /**
   * The start of the current line (all of it when `whole`): harmless, pg_dump's own line to take
   * out, a meta-command, or not yet known (more of the line decides). A start of MAX_LINE_PREFIX
   * bytes decides by itself.
   */
  private judge(start: Buffer, whole: boolean): Verdict {
    const decides = whole || start.length >= MAX_LINE_PREFIX
    if (this.inCopy) {
      // COPY data may begin with a backslash escape (\N, \\); only `\.` ends it.
      if (!whole) return isStartOf(start, COPY_END) && !decides ? 'undecided' : 'pass'
      if (start.length >= 2 && isStartOf(start, COPY_END)) this.inCopy = false
      return 'pass'
    }
    let i = 0
    while (i < start.length && isLeadingSpace(start[i])) i++
    if (i === start.length) return decides ? 'pass' : 'undecided'
    if (start[i] !== BACKSLASH) {
      if (!isStartOf(start.subarray(0, COPY_PREFIX.length), COPY_PREFIX)) return 'pass'
      if (!decides) return 'undecided'
      if (whole && COPY_START.test(start.toString('utf8').replace(/\r$/, ''))) this.inCopy = true
      return 'pass'
    }
    if (!decides) return 'undecided'
    const rest = start.subarray(i).toString('utf8')
    if (whole) {
      const restrict = this.restrictSeen ? null : PG_DUMP_RESTRICT.exec(rest)
      if (restrict) {
        this.restrictSeen = true
        this.restrictKey = restrict[1] ?? null
        return 'drop'
      }
      const unrestrict = PG_DUMP_UNRESTRICT.exec(rest)
      if (unrestrict && this.restrictKey !== null && unrestrict[1] === this.restrictKey) {
        this.restrictKey = null
        return 'drop'
      }
    }
    this.found = { line: this.lineNo, command: rest.split(/\s/, 1)[0] ?? rest }
    return 'reject'
  }

  private rejection(): Error {
    const found = this.found ?? { line: this.lineNo, command: '?' }
    return new Error(`line ${found.line} is the psql meta-command ${found.command}`)
  }
}
