import os from 'node:os'
import { ProcessOutput, $ as zx$, type ProcessPromise } from 'zx'
import { log } from './log.ts'
import { redact } from './redact.ts'

// zx's `$`, configured once: every command the toolkit runs goes through here, and so does an
// operator's hotfix line. Two tags say what a line does:
//
//   await $`docker compose up -d bot`           a change: under --dry-run it is printed, not run
//   const tags = await $read`git tag --list`    a read: it runs under --dry-run too, so the plan
//                                               is accurate
//
// What zx's defaults would get wrong here, and what this file does instead:
// - bash reads ~/.bashrc when its stdin is a socket and SHLVL is unset (node's stdio pipes are
//   socketpairs): SHLVL=1 in the child's environment, and `set -euo pipefail` before every line;
// - `$({ env })` replaces the environment: ours is merged over process.env;
// - stdin is /dev/null unless `input` is given, so a program that reads stdin never waits forever;
// - zx's timeout only sends a signal, and a child that ignores it or exits 0 on it looks fine:
//   after `timeoutMs` SIGTERM, after a grace period SIGKILL, and `timedOut()` tells the caller;
// - zx prints commands and output to stderr when verbose: here each command, its exit code and
//   duration go to the toolkit's log (DEBUG, so LOG_FILE keeps them), secrets redacted.
// - zx quotes an argument as bash's $'…'; here it is POSIX '…', the one style of every printed
//   plan (runStages' lines too) and of what an operator would type.
// zx keeps every chunk a child prints in memory: a dump or a restore never goes through `$` (see
// runStages in runner.ts, which joins programs with kernel pipes).

export interface ShellOptions {
  cwd?: string
  /** merged over process.env; where passwords go so they never appear in the command line */
  env?: Record<string, string>
  input?: string
  /** SIGTERM after this long, SIGKILL after a grace period (default: 10 minutes) */
  timeoutMs?: number
  /** resolve with the exit code instead of throwing, where the code branches on it */
  nothrow?: boolean
}

type Tag = (pieces: TemplateStringsArray, ...args: unknown[]) => ProcessPromise
export interface Shell extends Tag {
  /** options merge: `$read({ nothrow: true })({ env })` */
  (options: ShellOptions): Shell
}

const DEFAULT_TIMEOUT_MS = 10 * 60_000
/** how long a child has between SIGTERM and SIGKILL, for `$` and runStages alike */
export const KILL_GRACE_MS = 10_000

let dryRun = false

export function setDryRun(enabled: boolean): void {
  dryRun = enabled
}

export function isDryRun(): boolean {
  return dryRun
}

/** A command that changes something: printed, not run, under --dry-run. */
export const $: Shell = shell('change', {})
/** A command that only reads: it runs under --dry-run too. */
export const $read: Shell = shell('read', {})

const timedOutProcesses = new WeakSet<ProcessPromise>()

/** Whether the process was stopped by its timeout (its exit code is then whatever the kill left). */
export function timedOut(process: ProcessPromise): boolean {
  return timedOutProcesses.has(process)
}

function shell(kind: 'change' | 'read', options: ShellOptions): Shell {
  function tagOrOptions(pieces: TemplateStringsArray, ...args: unknown[]): ProcessPromise
  function tagOrOptions(options: ShellOptions): Shell
  function tagOrOptions(first: TemplateStringsArray | ShellOptions, ...args: unknown[]): ProcessPromise | Shell {
    if (!isTemplate(first)) return shell(kind, { ...options, ...first })
    return start(kind, options, first, args)
  }
  return tagOrOptions
}

function isTemplate(value: TemplateStringsArray | ShellOptions): value is TemplateStringsArray {
  return Array.isArray(value) && 'raw' in value
}

function start(kind: 'change' | 'read', options: ShellOptions, pieces: TemplateStringsArray, args: unknown[]): ProcessPromise {
  const configured = zx$({
    shell: '/bin/bash',
    prefix: 'set -euo pipefail; ',
    quiet: true,
    verbose: false,
    nothrow: options.nothrow ?? false,
    env: { ...process.env, ...options.env, SHLVL: '1' },
    cwd: options.cwd,
    input: options.input,
    stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    log: logEntry,
    quote,
  })
  if (kind === 'change' && dryRun) {
    process.stdout.write(`[dry-run] ${redact(configured({ halt: true })(pieces, ...args).cmd).trim()}\n`)
    // Nothing runs, but the caller's await, exit code and output still work: a shell no-op.
    return zx$({ shell: '/bin/bash', quiet: true, log: () => undefined, stdio: ['ignore', 'pipe', 'pipe'] })`:`
  }
  const process_ = configured(pieces, ...args)
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  const timer = setTimeout(() => {
    timedOutProcesses.add(process_)
    void process_.kill('SIGTERM').catch(() => undefined)
    setTimeout(() => void process_.kill('SIGKILL').catch(() => undefined), KILL_GRACE_MS).unref()
  }, timeoutMs)
  timer.unref()
  process_.finally(() => clearTimeout(timer)).catch(() => undefined)
  // Registered before the caller's await, so the caller (and runMain's last line) sees the message.
  process_.catch((error: unknown) => {
    if (!(error instanceof ProcessOutput)) return
    const message = timedOutProcesses.has(process_) ? redact(`Timed out after ${Math.round(timeoutMs / 1000)}s: ${process_.cmd}`) : failureMessage(process_.cmd, error)
    Object.defineProperty(error, 'message', { value: message, configurable: true })
  })
  return process_
}

/** POSIX single quotes, only where needed: how `$` quotes each interpolated argument, and how plans print. */
export function quote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`
}

const running = new Map<string, string>()

function logEntry(entry: Parameters<typeof zx$.log>[0]): void {
  if (entry.kind === 'cmd') {
    running.set(entry.id, entry.cmd)
    log.debug(`$ ${entry.cmd}`)
  } else if (entry.kind === 'end') {
    const cmd = running.get(entry.id) ?? ''
    running.delete(entry.id)
    log.debug(`exit ${exitCodeOf(entry.exitCode, entry.signal)} in ${entry.duration} ms: ${cmd.length > 80 ? `${cmd.slice(0, 80)}...` : cmd}`)
  }
}

/** Names the program first (what an operator searches for), then the tail of its stderr and the command. */
export function failureMessage(cmd: string, output: { exitCode: number | null; signal: NodeJS.Signals | null; stderr: string; stdout: string }): string {
  const program = cmd.trim().split(/\s+/)[0] ?? cmd
  const code = exitCodeOf(output.exitCode, output.signal)
  const tail = (output.stderr || output.stdout).trim().split('\n').slice(-5).join(' | ')
  return redact(`${program} failed: ${tail || `exit code ${code}`} (exit ${code}: ${cmd})`)
}

/** A death by signal N is 128+N, as a shell reports it. */
export function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code
  return 128 + (signal ? (os.constants.signals[signal] ?? 0) : 0)
}
