import { question } from 'zx'
import { OpsError } from './errors.ts'
import { addSecret } from './redact.ts'
import { isDryRun } from './shell.ts'

// A visible answer is read with zx's question(). A secret is read here, in raw mode, one key at a
// time: zx's question() echoes what is typed, and a secret must never be echoed (not even by the
// terminal's own line discipline) nor buffered where a log could pick it up. With no terminal
// question() would wait forever and the process exit 13 silently: callers prompt only when
// canPrompt() says there is a terminal to ask on.
export function canPrompt(): boolean {
  return process.stdin.isTTY === true && process.stderr.isTTY === true
}

export interface AskOptions {
  /** not echoed; registered for redaction as soon as it is read */
  secret?: boolean
  /** used when the answer is empty; shown in brackets unless secret */
  fallback?: string
  /** null when acceptable, else the reason, printed before asking again */
  validate?: (value: string) => string | null
}

/** Asks until the answer passes `validate`. Ctrl-C interrupts as it would anywhere else. */
export async function ask(what: string, options: AskOptions = {}): Promise<string> {
  if (!canPrompt()) throw new OpsError('config', `Cannot ask "${what}": there is no terminal`)
  const shown = options.fallback !== undefined && !options.secret && options.fallback !== '' ? ` [${options.fallback}]` : ''
  for (;;) {
    const typed = options.secret ? await readSecret(`${what}${shown}: `) : await readVisible(`${what}${shown}: `)
    const answer = typed.trim() === '' && options.fallback !== undefined ? options.fallback : typed.trim()
    if (options.secret) addSecret(answer)
    const wrong = options.validate?.(answer) ?? null
    if (!wrong) return answer
    process.stderr.write(`  Invalid: ${wrong}. Try again.\n`)
  }
}

// Keys typed ahead of the next prompt (a paste of several answers) wait here.
let pending = ''

/**
 * zx's question() (readline, on stderr like every prompt), made to end as the secret reader does:
 * readline only closes on Ctrl-C, or Ctrl-D at an empty line, and the answer awaited would never
 * come. Keys typed ahead of it (a paste of several answers) are its first input.
 */
function readVisible(prompt: string): Promise<string> {
  const stdin = process.stdin
  if (pending) stdin.unshift(Buffer.from(pending, 'utf8'))
  pending = ''
  return new Promise((resolve, reject) => {
    let answered = false
    const onKey = (_: unknown, key: { ctrl?: boolean; name?: string } | undefined) => {
      if (!key?.ctrl || (key.name !== 'c' && key.name !== 'd')) return
      // readline's own handler ran first: its input is paused once it has closed.
      setImmediate(() => {
        if (answered || !stdin.isPaused()) return
        stdin.off('keypress', onKey)
        if (key.name === 'd') return reject(new OpsError('refused', 'End of input at a prompt; nothing more was changed'))
        // The same path as a Ctrl-C anywhere else: runMain's handler cleans up and exits 130. A
        // handled signal arrives on a later turn: until then a timer keeps the process alive.
        process.kill(process.pid, 'SIGINT')
        setTimeout(() => reject(new OpsError('refused', 'Interrupted at a prompt; nothing more was changed')), 5_000)
      })
    }
    question(prompt, { output: process.stderr }).then((answer) => {
      answered = true
      stdin.off('keypress', onKey)
      resolve(answer)
    }, reject)
    stdin.on('keypress', onKey)
  })
}

/** Raw mode comes on before the prompt is shown: a key typed at once is never echoed by the terminal. */
function readSecret(prompt: string): Promise<string> {
  const stdin = process.stdin
  return new Promise((resolve, reject) => {
    let line = ''
    const finish = (error: Error | null) => {
      stdin.off('data', onData)
      stdin.setRawMode(false)
      stdin.pause()
      process.stderr.write('\n')
      if (error) reject(error)
      else resolve(line)
    }
    const feed = (text: string): boolean => {
      for (let i = 0; i < text.length; i++) {
        const ch = text[i]!
        if (ch === '\r' || ch === '\n') {
          // A CR LF pair is one Enter.
          pending = text.slice(text[i + 1] === '\n' && ch === '\r' ? i + 2 : i + 1)
          finish(null)
          return true
        }
        if (ch === '\x03') {
          pending = ''
          finish(null)
          // The same path as a Ctrl-C anywhere else: runMain's handler cleans up and exits 130.
          process.kill(process.pid, 'SIGINT')
          return true
        }
        if (ch === '\x04' && line === '') {
          pending = ''
          finish(new OpsError('refused', 'End of input at a prompt; nothing more was changed'))
          return true
        }
        if (ch === '\x7f' || ch === '\b') {
          line = line.slice(0, -1)
        } else if (ch === '\x15') {
          line = ''
        } else if (ch === '\x1b') {
          // An escape sequence (arrow keys): skip it whole.
          const seq = /^\x1b(\[[0-9;]*[A-Za-z~]|O[A-Za-z]|.)?/.exec(text.slice(i))
          i += (seq?.[0].length ?? 1) - 1
        } else if (ch >= ' ') {
          line += ch
        }
      }
      return false
    }
    const onData = (chunk: Buffer) => void feed(chunk.toString('utf8'))
    stdin.setRawMode(true)
    process.stderr.write(prompt)
    const ahead = pending
    pending = ''
    if (feed(ahead)) return
    stdin.on('data', onData)
    stdin.resume()
  })
}

// With no terminal, a prompt would wait forever (zx's question() exits 13 silently): a destructive
// step then needs --yes, and says so. On one, the same reader as every other prompt.
export async function confirmDestructive(question: string, assumeYes: boolean): Promise<void> {
  if (assumeYes || isDryRun()) return
  if (!canPrompt()) {
    throw new OpsError('refused', 'Refusing to continue without confirmation: there is no terminal to ask on. Re-run with --yes to confirm; nothing was changed')
  }
  const answer = (await ask(`${question} Type "yes" to continue`, { fallback: '' })).toLowerCase()
  if (answer !== 'yes' && answer !== 'y') throw new OpsError('refused', 'Cancelled by the operator; nothing was changed')
}
