import fs from 'node:fs'
import path from 'node:path'
import { Transform, type TransformCallback } from 'node:stream'
import { formatBytes } from './format.ts'
import { log } from './log.ts'

// Long work (a 1 GB dump, a slow pull, the health wait) must not look like a hang. On a terminal a
// status line is redrawn in place on stderr; without one (systemd, CI, a pipe) a plain log line at
// most every 30 s, so the journal shows life without a line per second. stdout, which may carry
// --json, never sees any of it. Not zx's spinner: it shows no bytes or rate, and draws on a pipe too.
const PLAIN_EVERY_MS = 30_000
const REDRAW_EVERY_MS = 250

export interface Progress {
  update(text: string): void
  done(): void
}

export function progressReporter(label: string, stream: NodeJS.WriteStream = process.stderr): Progress {
  const tty = stream.isTTY === true
  const started = Date.now()
  let last = 0
  let drawn = false
  return {
    update(text) {
      const now = Date.now()
      if (tty) {
        if (now - last < REDRAW_EVERY_MS) return
        stream.write(`\r\x1b[2K${label}: ${text}`)
        drawn = true
      } else {
        if (now - Math.max(last, started) < PLAIN_EVERY_MS) return
        log.info(`${label}: ${text}`)
      }
      last = now
    },
    done() {
      if (drawn) stream.write('\r\x1b[2K')
      drawn = false
    },
  }
}

/** A pass-through stage that reports bytes and rate as data streams by. */
export class ByteProgress extends Transform {
  private bytes = 0
  private readonly started = Date.now()
  private readonly progress: Progress

  constructor(label: string) {
    super()
    this.progress = progressReporter(label)
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length
    const seconds = (Date.now() - this.started) / 1000
    const rate = seconds > 0 ? `${formatBytes(this.bytes / seconds)}/s` : ''
    this.progress.update(`${formatBytes(this.bytes)}, ${rate}`)
    callback(null, chunk)
  }

  override _flush(callback: TransformCallback): void {
    this.progress.done()
    callback()
  }
}

/**
 * Reports how far a child process has read `file`, from its file offset in /proc: for a file a
 * command reads itself (gunzip feeding psql through a kernel pipe), where no byte passes node.
 * Returns the function that stops it.
 */
export function watchReadPosition(pid: number, file: string, label: string): () => void {
  let total: number
  try {
    total = fs.statSync(file).size
  } catch {
    return () => undefined
  }
  const progress = progressReporter(label)
  const started = Date.now()
  const resolved = path.resolve(file)
  const timer = setInterval(() => {
    const position = readPosition(pid, resolved)
    if (position === null) return
    const rate = formatBytes(position / Math.max(1, (Date.now() - started) / 1000))
    progress.update(`${formatBytes(position)} of ${formatBytes(total)} (${Math.floor((100 * position) / Math.max(1, total))}%), ${rate}/s`)
  }, 1000)
  timer.unref()
  return () => {
    clearInterval(timer)
    progress.done()
  }
}

function readPosition(pid: number, file: string): number | null {
  try {
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`) !== file) continue
      const match = /^pos:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))
      return match ? Number(match[1]) : null
    }
  } catch {
    // the process ended, or /proc is not Linux's: no progress, never a failure
  }
  return null
}
