import type { Command } from '../core/runner.ts'

// sshd's own checks (setup's hardening), as builders.

/** `sshd -t`: the whole configuration, drop-in included, parses (before any reload). */
export function sshdTest(): Command {
  return { argv: ['sshd', '-t'], mutates: false, timeoutMs: 30_000 }
}

/** `sshd -T`: the values sshd would use, lower-case keywords. */
export function sshdEffective(): Command {
  return { argv: ['sshd', '-T'], mutates: false, timeoutMs: 30_000 }
}
