import path from 'node:path'
import type { Command } from '../core/runner.ts'

// systemctl, as a builder, and what systemd-analyze's check of unit files means.

export function systemctl(...args: string[]): Command {
  return { argv: ['systemctl', ...args], timeoutMs: 20 * 60_000 }
}

/** The lines of systemd-analyze's output about these files: any is a unit systemd would half-ignore. */
export function unitWarnings(output: string, files: string[]): string[] {
  const names = files.map((f) => path.basename(f))
  return output.split('\n').map((l) => l.trim()).filter((line) => line && names.some((name) => line.includes(name)))
}


/** A running sshd reads the new configuration; one not running reads it when it starts. */
export function reloadSsh(): Command {
  return { argv: ['systemctl', 'try-reload-or-restart', 'ssh.service'], timeoutMs: 60_000 }
}
