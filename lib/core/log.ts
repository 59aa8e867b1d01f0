import fs from 'node:fs'
import path from 'node:path'
import chalk from 'chalk'
import { appendNoFollow } from './no-follow.ts'
import { redact } from './redact.ts'
import { dayjs } from './time.ts'

// The contract's line: `[YYYY-MM-DD HH:MM:SS] LEVEL: message`, UTC. INFO goes to stdout (stderr when
// stdout carries JSON), WARN and ERROR to stderr, and every line, DEBUG included, to the log file.
export type Level = 'DEBUG' | 'INFO' | 'WARN' | 'ERROR'

interface LogSettings {
  file: string | null
  stdoutIsData: boolean
  verbose: boolean
}

const settings: LogSettings = { file: null, stdoutIsData: false, verbose: false }
let fileFailed = false

if (process.env.NO_COLOR !== undefined || !process.stderr.isTTY) chalk.level = 0

export function configureLog(next: Partial<LogSettings>): void {
  Object.assign(settings, next)
  fileFailed = false
}

export function formatLine(level: Level, message: string, now = new Date()): string {
  const stamp = dayjs.utc(now).format('YYYY-MM-DD HH:mm:ss')
  // One event, one line: a multi-line message (an SQL statement, a stack) would break the format.
  return `[${stamp}] ${level}: ${redact(message).trim().replace(/\s*\n\s*/g, ' ')}`
}

function write(level: Level, message: string): void {
  const line = formatLine(level, message)
  appendToFile(line)
  if (level === 'DEBUG' && !settings.verbose) return
  const toStdout = level === 'INFO' && !settings.stdoutIsData
  const colour = level === 'ERROR' ? chalk.red : level === 'WARN' ? chalk.yellow : level === 'DEBUG' ? chalk.dim : (s: string) => s
  ;(toStdout ? process.stdout : process.stderr).write(colour(line) + '\n')
}

function appendToFile(line: string): void {
  if (!settings.file || fileFailed) return
  try {
    ensureDir(path.dirname(settings.file))
    // Never through a link: root (setup-droplet) appends here, in the deploy user's directory.
    appendNoFollow(settings.file, line + '\n', 0o640)
  } catch (error) {
    // A read-only or full log disk must not stop a backup: say so once and carry on.
    fileFailed = true
    process.stderr.write(`warning: cannot write log file ${settings.file}: ${(error as Error).message}; logging to the terminal only\n`)
  }
}

// Not mkdirSync({ recursive: true }): on some paths (under /proc) Node's recursive mkdir spins
// forever instead of failing.
function ensureDir(dir: string): void {
  if (fs.existsSync(dir)) return
  ensureDir(path.dirname(dir))
  fs.mkdirSync(dir)
}

export const log = {
  debug: (message: string) => write('DEBUG', message),
  info: (message: string) => write('INFO', message),
  warn: (message: string) => write('WARN', message),
  error: (message: string) => write('ERROR', message),
}
