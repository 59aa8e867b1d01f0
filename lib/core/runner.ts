import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import { Duplex, type Readable, type Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { OpsError } from './errors.ts'
import { log } from './log.ts'
import { watchReadPosition } from './progress.ts'
import { redact } from './redact.ts'
import { exitCodeOf, failureMessage, isDryRun, KILL_GRACE_MS, quote } from './shell.ts'

// The streams that are not zx: pg_dump | pigz | tee | age and pigz -d | guard | psql run through
// runStages, because zx keeps every chunk a child prints in memory and a 1 GB dump must never sit
// in node's: programs are joined by kernel pipes, and where node must read the bytes (the restore's
// meta-command guard) a stream.pipeline with backpressure holds one chunk at a time. Every other
// command is a `$` line (shell.ts).
export interface Command {
  argv: string[]
  /** merged over the process environment; where passwords go so they never appear in argv */
  env?: Record<string, string>
  cwd?: string
  input?: string
  timeoutMs?: number
  /** false for read-only probes, which still run under --dry-run so the plan is accurate */
  mutates?: boolean
  /** a large file the command reads itself: its progress is shown as it goes */
  reads?: { file: string; label: string }
}

export interface RunResult {
  exitCode: number
  stdout: string
  stderr: string
}


export function describe(command: Command): string {
  return redact(command.argv.map(quote).join(' '))
}

/** A command that exited non-zero; `command` says which, for callers that tell the stages apart. */
export class CommandFailed extends OpsError {
  constructor(
    readonly command: Command,
    message: string,
  ) {
    super('command_failed', message)
  }
}

function commandFailed(command: Command, exitCode: number, output: string): CommandFailed {
  return new CommandFailed(command, failureMessage(describe(command), { exitCode, signal: null, stderr: output, stdout: '' }))
}

// ---- streaming ---------------------------------------------------------------------------------

/** A stage of a streamed pipeline: an external command, an in-process transform, or a file. */
export type Stage = Command | Writable | { readFrom: string } | { writeTo: string }

function isCommand(stage: Stage): stage is Command {
  return 'argv' in stage
}

export function describeStages(stages: Stage[]): string {
  return stages
    .map((stage) => {
      if (isCommand(stage)) return describe(stage)
      if ('readFrom' in stage) return `< ${stage.readFrom}`
      if ('writeTo' in stage) return `> ${stage.writeTo}`
      return `[${stage.constructor.name}]`
    })
    .join(' | ')
    .replace(/^< (\S+) \| /, '< $1 ')
    .replace(/ \| > /, ' > ')
}


/**
 * Starts a command that outlives this process (its own session, no stdio: it logs for itself);
 * returns its pid, or null under --dry-run.
 */
export function startDetached(command: Command): number | null {
  if (isDryRun()) {
    process.stdout.write(`[dry-run] ${describe(command)}\n`)
    return null
  }
  log.debug(`$ ${describe(command)} (detached)`)
  const child = spawn(command.argv[0] ?? '', command.argv.slice(1), { cwd: command.cwd, env: { ...process.env, ...command.env }, detached: true, stdio: 'ignore' })
  child.unref()
  if (child.pid === undefined) throw new OpsError('command_failed', `${describe(command)} did not start`)
  return child.pid
}

/**
 * Streams data through the stages with backpressure, so memory stays flat whatever the size of
 * the database. Every child must exit 0; the first failing child's stderr becomes the error.
 * A file sink is created exclusively: an existing file is never overwritten.
 */
export async function runStages(stages: Stage[], timeoutMs: number, killGraceMs = KILL_GRACE_MS): Promise<void> {
  if (isDryRun()) {
    process.stdout.write(`[dry-run] ${describeStages(stages)}\n`)
    return
  }
  log.debug(`$ ${describeStages(stages)}`)
  const children: Child[] = []
  const streams: (Readable | Writable | Duplex)[] = []
  for (let i = 0; i < stages.length; i++) {
    const stage = stages[i]!
    if ('readFrom' in stage) streams.push(fs.createReadStream(stage.readFrom, { highWaterMark: 1 << 20 }))
    else if ('writeTo' in stage) streams.push(fs.createWriteStream(stage.writeTo, { flags: 'wx', mode: 0o600 }))
    else if (!isCommand(stage)) streams.push(stage)
    else {
      let end = i
      while (end + 1 < stages.length && isCommand(stages[end + 1]!)) end++
      const joined = spawnJoined(stages.slice(i, end + 1) as Command[], { input: i > 0, output: end < stages.length - 1 }, children)
      if (joined) streams.push(joined)
      i = end
    }
  }
  const exits = children.map(({ child }) => exitOf(child))
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    terminate(children, killGraceMs)
  }, timeoutMs)
  try {
    const flowing = streams.length ? pipeline(streams as [Readable, ...Writable[]]) : Promise.resolve()
    // A child that dies early (psql on ON_ERROR_STOP) breaks the pipe; its stderr is the real story.
    const streamError = await flowing.then(() => null, (error: unknown) => error as Error)
    if (streamError) terminate(children, killGraceMs)
    const codes = await Promise.all(exits)
    if (timedOut) throw new OpsError('timeout', `Timed out after ${Math.round(timeoutMs / 1000)}s: ${describeStages(stages)}`)
    // A sink that cannot write (ENOSPC, EACCES) is the cause; the children only saw the pipe break.
    if (streamError && isSystemError(streamError)) throw streamError
    const failed = children.findIndex((_, i) => codes[i] !== 0)
    if (failed >= 0) {
      const { command, stderr } = children[failed]!
      throw commandFailed(command, codes[failed]!, stderr.join(''))
    }
    if (streamError) throw streamError
  } finally {
    clearTimeout(timer)
  }
}

/**
 * SIGTERM, then SIGKILL for a stage still alive after the grace period: a child that ignores
 * SIGTERM would otherwise hold the backup (and its lock) forever. A grandchild that ignored it too
 * keeps the pipes open after its parent died, so our ends are closed for 'close' to come.
 */
function terminate(children: Child[], graceMs: number): void {
  for (const { child } of children) {
    if (child.exitCode !== null || child.signalCode !== null) continue
    child.kill('SIGTERM')
    const escalate = setTimeout(() => {
      if (child.exitCode === null && child.signalCode === null) {
        log.warn(`${child.spawnargs[0] ?? 'a stage'} ignored SIGTERM for ${graceMs / 1000}s: killing it`)
        child.kill('SIGKILL')
      }
      for (const end of [child.stdin, child.stdout, child.stderr]) end?.destroy()
    }, graceMs)
    child.once('close', () => clearTimeout(escalate))
  }
}

interface Child {
  command: Command
  child: ChildProcess
  stderr: string[]
}

/**
 * Spawns adjacent commands joined by kernel pipes, as a shell joins them: their bytes never pass
 * through node. Returns the stream node feeds or reads (null when neither). The first command reads
 * nothing and the last writes nothing unless `input`/`output` say so: an unused pipe end that is
 * never closed makes a child that exits with output still buffered look like a premature close.
 */
function spawnJoined(commands: Command[], io: { input: boolean; output: boolean }, children: Child[]): Readable | Writable | Duplex | null {
  let head: Writable | null = null
  let upstream: Readable | null = null
  for (const [k, command] of commands.entries()) {
    const piped = spawnPiped(command, upstream ?? (io.input ? 'pipe' : 'ignore'), k < commands.length - 1 || io.output)
    if (command.reads && piped.child.pid) piped.child.once('close', watchReadPosition(piped.child.pid, command.reads.file, command.reads.label))
    // The parent's copy of the read end must go, or a writer never sees its reader die (EPIPE).
    upstream?.destroy()
    const stderr: string[] = []
    piped.stderr.on('data', (chunk: Buffer) => keepTail(stderr, chunk.toString()))
    children.push({ command, child: piped.child, stderr })
    head ??= piped.stdin
    upstream = piped.stdout
  }
  // head: the first child's stdin, piped only for io.input; upstream: the last one's stdout, only for io.output
  if (head && upstream) return Duplex.from({ writable: head, readable: upstream })
  return head ?? upstream
}

interface Piped {
  child: ChildProcess
  stdin: Writable | null
  stdout: Readable | null
  stderr: Readable
}

/**
 * A child whose stderr is always a pipe (it becomes the error), its stdin the upstream child's
 * stdout, a pipe from node, or nothing. One spawn per stdio shape: that is how node's types know
 * which of the child's ends are pipes.
 */
function spawnPiped(command: Command, stdin: Readable | 'pipe' | 'ignore', pipeStdout: boolean): Piped {
  const [program = '', ...args] = command.argv
  const options = { cwd: command.cwd, env: { ...process.env, ...command.env } }
  if (stdin === 'pipe') {
    const child = pipeStdout
      ? spawn(program, args, { ...options, stdio: ['pipe', 'pipe', 'pipe'] })
      : spawn(program, args, { ...options, stdio: ['pipe', 'ignore', 'pipe'] })
    return { child, stdin: child.stdin, stdout: child.stdout, stderr: child.stderr }
  }
  const child = pipeStdout
    ? spawn(program, args, { ...options, stdio: [stdin, 'pipe', 'pipe'] })
    : spawn(program, args, { ...options, stdio: [stdin, 'ignore', 'pipe'] })
  return { child, stdin: null, stdout: child.stdout, stderr: child.stderr }
}

function isSystemError(error: Error): boolean {
  const code = (error as NodeJS.ErrnoException).code
  return typeof code === 'string' && code.startsWith('E') && code !== 'EPIPE' && !code.startsWith('ERR_')
}

function exitOf(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.on('error', () => resolve(127))
    child.on('close', (code, signal) => resolve(code === null && signal === null ? 1 : exitCodeOf(code, signal)))
  })
}

function keepTail(buffer: string[], text: string): void {
  buffer.push(text)
  while (buffer.join('').length > 8192 && buffer.length > 1) buffer.shift()
}
