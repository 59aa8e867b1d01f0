// What the toolkit's git lines share (setup's clone, deploy's fetch and checkout are `$` lines):
// the environment that keeps git from prompting, and reading ssh URLs and git's failures.

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

/**
 * The lines of a failed git command's stderr that say why (`Permission denied (publickey)`,
 * `Repository not found`), without the advice git prints after every remote failure.
 */
export function gitFailureReason(stderr: string): string {
  const boilerplate = /^(Please make sure you have the correct access rights|and the repository exists\.?)$/
  return stderr.split('\n').map((l) => l.trim()).filter((l) => l && !boilerplate.test(l)).slice(0, 3).join(' | ')
}
