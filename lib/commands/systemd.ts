import path from 'node:path'
import type { Command } from '../core/runner.ts'

// systemctl and the checks of unit and logrotate files, as builders.

export function systemctl(...args: string[]): Command {
  return { argv: ['systemctl', ...args], timeoutMs: 20 * 60_000 }
}

/**
 * Checks the installed units the way systemd will load them; read-only. It exits 0 on a value it
 * only ignores (`Type=bogus`), so its output is read too: see unitWarnings.
 */
export function verifyUnits(files: string[]): Command {
  return { argv: ['systemd-analyze', 'verify', '--man=no', ...files], timeoutMs: 60_000, mutates: false }
}

/** The lines of systemd-analyze's output about these files: any is a unit systemd would half-ignore. */
export function unitWarnings(output: string, files: string[]): string[] {
  const names = files.map((f) => path.basename(f))
  return output.split('\n').map((l) => l.trim()).filter((line) => line && names.some((name) => line.includes(name)))
}

/** Parses and dry-runs the logrotate file (`-d` changes nothing). */
export function verifyLogrotate(file: string): Command {
  return { argv: ['logrotate', '--debug', file], timeoutMs: 30_000, mutates: false }
}

/** A running sshd reads the new configuration; one not running reads it when it starts. */
export function reloadSsh(): Command {
  return { argv: ['systemctl', 'try-reload-or-restart', 'ssh.service'], timeoutMs: 60_000 }
}
