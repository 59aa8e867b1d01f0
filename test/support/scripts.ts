import { spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')
const TSX = path.join(ROOT, 'node_modules/.bin/tsx')

export interface ScriptResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs a contract script the way an operator does (tsx, real processes), with no terminal. */
export function runScript(name: string, args: string[], env: Record<string, string | undefined>): Promise<ScriptResult> {
  return exec([TSX, path.join(ROOT, 'scripts', `${name}.ts`), ...args], { PATH: process.env.PATH, HOME: process.env.HOME, NO_COLOR: '1', ...env }, { inherit: false })
}

/** Runs a command to completion and keeps its output; with `inherit` the environment is merged over ours. */
export function exec(argv: string[], env: Record<string, string | undefined> = {}, options: { inherit?: boolean } = {}): Promise<ScriptResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: ROOT,
      env: (options.inherit === false ? env : { ...process.env, ...env }) as NodeJS.ProcessEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }))
  })
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

export function readLog(file: string): string[] {
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim().split('\n') : []
}

export const LOG_LINE = /^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\] (DEBUG|INFO|WARN|ERROR): .+$/

/** Polls `check` until it holds (a check that throws, say on a file not there yet, counts as no). */
export async function waitFor(check: () => boolean, timeoutMs: number, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      if (check()) return
    } catch {
      // not there yet
    }
    if (Date.now() > deadline) throw new Error('timed out waiting')
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

/** A script's environment against a database reached by URL, with its state in `work`. */
export function urlModeEnv(databaseUrl: string, work: string): Record<string, string> {
  return {
    DB_MODE: 'url',
    DATABASE_URL: databaseUrl,
    BACKUP_DIR: path.join(work, 'backups'),
    LOG_FILE: path.join(work, 'deployment.log'),
    DEPLOY_DIR: work,
    APP_SERVICES: '',
    MIN_FREE_DISK_MB: '1',
  }
}
