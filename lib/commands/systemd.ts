import path from 'node:path'
import { $ } from '../core/shell.ts'

// systemctl, as setup's steps share it, and what systemd-analyze's check of unit files means.

export function systemctl(...args: string[]) {
  return $({ timeoutMs: 20 * 60_000 })`systemctl ${args}`
}

/** The lines of systemd-analyze's output about these files: any is a unit systemd would half-ignore. */
export function unitWarnings(output: string, files: string[]): string[] {
  const names = files.map((f) => path.basename(f))
  return output.split('\n').map((l) => l.trim()).filter((line) => line && names.some((name) => line.includes(name)))
}
