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
const LEADING_SPACE = /^[ \t\f\v\r]*/

/**
 * Passes a plain dump on to psql with no psql meta-command in it: a line outside COPY data that
 * starts with a backslash stops the stream (`found` names it) before a byte of that line is passed
 * on. pg_dump's own `\restrict KEY` / `\unrestrict KEY` pair is taken out: psql runs the restore
 * under a key of the restorer's (psqlRestore), which the dump's pair would only collide with.
 * Lines are passed whole, each once it is known to be harmless; a line longer than MAX_LINE_PREFIX
 * is judged by its start, which is where a meta-command line shows itself. A backslash in the
 * middle of a line is psql's to refuse, under that key.
 */
export class MetaCommandGuard extends Transform {
  /** the first meta-command line, once seen: the stream failed with it */
  found: MetaCommand | null = null
  private inCopy = false
  private lineNo = 0
  /** the start of a line not yet complete, held back until it is judged */
  private held: Buffer = Buffer.alloc(0)
  /** the current line was judged harmless by its start: the rest of it passes as it comes */
  private passing = false
  private restrictKey: string | null = null
  private restrictSeen = false

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    let start = 0
    let run = 0
    const flushRun = (end: number) => {
      if (end > run) this.push(chunk.subarray(run, end))
    }
    for (let nl = chunk.indexOf(10, start); nl !== -1; nl = chunk.indexOf(10, start)) {
      if (this.passing) {
        this.passing = false
      } else if (this.held.length > 0) {
        const line = Buffer.concat([this.held, chunk.subarray(start, nl)])
        this.held = Buffer.alloc(0)
        const verdict = this.judge(line)
        if (verdict === 'reject') return done(this.rejection())
        if (verdict === 'pass') this.push(Buffer.concat([line, Buffer.from('\n')]))
        run = nl + 1
      } else {
        const verdict = this.judge(chunk.subarray(start, nl))
        if (verdict === 'reject') {
          flushRun(start)
          return done(this.rejection())
        }
        if (verdict === 'drop') {
          flushRun(start)
          run = nl + 1
        }
      }
      start = nl + 1
    }
    flushRun(start)
    run = start
    if (start < chunk.length) {
      if (this.passing) this.push(chunk.subarray(start))
      else {
        this.held = Buffer.concat([this.held, chunk.subarray(start)])
        if (this.held.length >= MAX_LINE_PREFIX) {
          // Too long to hold: its start decides, and the rest passes as it comes.
          if (this.judge(this.held, { partial: true }) === 'reject') return done(this.rejection())
          this.push(this.held)
          this.held = Buffer.alloc(0)
          this.passing = true
        }
      }
    }
    done()
  }

  override _flush(done: TransformCallback): void {
    if (this.held.length > 0 && !this.passing) {
      const verdict = this.judge(this.held)
      if (verdict === 'reject') return done(this.rejection())
      if (verdict === 'pass') this.push(this.held)
    }
    done()
  }

  /** One line (or the start of a long one): counted, and passed, dropped or rejected. */
  private judge(bytes: Buffer, opts: { partial?: boolean } = {}): 'pass' | 'drop' | 'reject' {
    this.lineNo++
    if (this.inCopy) {
      // COPY data may begin with a backslash escape (\N, \\); only `\.` ends it.
      if (bytes.length <= 3 && /^\\\.\r?$/.test(bytes.toString('latin1'))) this.inCopy = false
      return 'pass'
    }
    const text = bytes.subarray(0, MAX_LINE_PREFIX).toString('utf8')
    const rest = text.replace(LEADING_SPACE, '')
    if (!rest.startsWith('\\')) {
      if (!opts.partial && COPY_START.test(text.replace(/\r$/, ''))) this.inCopy = true
      return 'pass'
    }
    if (!opts.partial) {
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
