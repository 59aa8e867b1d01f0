import type { Command } from '../core/runner.ts'

// Every git command the toolkit runs: setup's clone, deploy's fetch and checkout, as builders.

/**
 * No terminal prompt for credentials: a private repository the deploy user cannot read fails with
 * git's message instead of hanging a non-interactive setup. With an ssh remote, git uses the
 * deploy key (sshCommand).
 */
export function gitEnv(sshCommand: string | null = null): Record<string, string> {
  return { GIT_TERMINAL_PROMPT: '0', ...(sshCommand ? { GIT_SSH_COMMAND: sshCommand } : {}) }
}

/**
 * ssh for the application repository: the deploy key only (not whatever else ~/.ssh holds), the
 * host key accepted on first use and checked from then on (a changed one is still refused), and
 * never a prompt (BatchMode: a missing key is an error, not a passphrase question).
 */
export function gitSshCommand(keyFile: string): string {
  return `ssh -i ${keyFile} -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new -o BatchMode=yes`
}

/** git's own rule: ssh:// (and git+ssh://), or scp-like `[user@]host:path` with no slash before the colon. */
export function isSshUrl(url: string): boolean {
  if (/^(ssh|git\+ssh|ssh\+git):\/\//i.test(url)) return true
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return false
  const colon = url.indexOf(':')
  return colon > 0 && !url.slice(0, colon).includes('/')
}

/** The host an ssh URL names (for messages): git@github.com:team/bot.git -> github.com. */
export function sshHost(url: string): string | null {
  if (!isSshUrl(url)) return null
  const match = /^[a-z+]+:\/\/(?:[^@/]+@)?(\[[^\]]+\]|[^:/]+)/i.exec(url) ?? /^(?:[^@:]+@)?([^:]+):/.exec(url)
  return match?.[1] ?? null
}

/** Tags moved or deleted upstream move here too (--force, --prune): a release tag means one commit. */
export function gitFetch(dir: string, sshCommand: string | null = null): Command {
  return { argv: ['git', '-C', dir, 'fetch', '--quiet', '--tags', '--force', '--prune', 'origin'], env: gitEnv(sshCommand), timeoutMs: 5 * 60_000, mutates: false }
}

/** The commit `ref` names, or HEAD's: comparing them tells whether a checkout would change anything. */
export function gitResolve(dir: string, ref: string): Command {
  return { argv: ['git', '-C', dir, 'rev-parse', '--verify', '--quiet', `${ref}^{commit}`], env: gitEnv(), mutates: false, timeoutMs: 30_000 }
}

/** --force: the checkout is the toolkit's, never edited by hand; a stray change must not block a deploy. */
export function gitCheckout(dir: string, ref: string): Command {
  return { argv: ['git', '-C', dir, 'checkout', '--detach', '--force', '--quiet', ref], env: gitEnv(), timeoutMs: 5 * 60_000 }
}

/**
 * The lines of a failed git command's stderr that say why (`Permission denied (publickey)`,
 * `Repository not found`), without the advice git prints after every remote failure.
 */
export function gitFailureReason(stderr: string): string {
  const boilerplate = /^(Please make sure you have the correct access rights|and the repository exists\.?)$/
  return stderr.split('\n').map((l) => l.trim()).filter((l) => l && !boilerplate.test(l)).slice(0, 3).join(' | ')
}
