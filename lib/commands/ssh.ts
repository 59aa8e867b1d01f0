import type { Command } from '../core/runner.ts'

// sshd's own checks (setup's hardening) and ssh-keygen (the deploy user's key), as builders.

/** `sshd -t`: the whole configuration, drop-in included, parses (before any reload). */
export function sshdTest(): Command {
  return { argv: ['sshd', '-t'], mutates: false, timeoutMs: 30_000 }
}

/** `sshd -T`: the values sshd would use, lower-case keywords. */
export function sshdEffective(): Command {
  return { argv: ['sshd', '-T'], mutates: false, timeoutMs: 30_000 }
}

/** No passphrase: the key is used unattended by deploys and timers; its file is the protection (600). */
export function sshKeygen(keyFile: string, comment: string): Command {
  return { argv: ['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', keyFile], timeoutMs: 30_000 }
}

/** The public half, derived from the private key (an operator's key may come without its .pub). */
export function sshPublicKey(keyFile: string): Command {
  // -P '': a key with a passphrase fails here instead of asking for it.
  return { argv: ['ssh-keygen', '-y', '-P', '', '-f', keyFile], mutates: false, timeoutMs: 30_000 }
}
