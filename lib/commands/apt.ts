import type { Command } from '../core/runner.ts'

// apt, unattended: pure builders and what their output means.

// No debconf question, no "which services to restart" dialog (needrestart on Ubuntu), and a
// changed config file keeps the local version: an unattended upgrade must never stop and ask.
const APT_ENV = { DEBIAN_FRONTEND: 'noninteractive', NEEDRESTART_MODE: 'a', APT_LISTCHANGES_FRONTEND: 'none' }
const KEEP_CONFIG = ['-o', 'Dpkg::Options::=--force-confdef', '-o', 'Dpkg::Options::=--force-confold']
const APT_TIMEOUT_MS = 30 * 60_000

export function aptUpdate(): Command {
  return { argv: ['apt-get', 'update', '-q'], env: APT_ENV, timeoutMs: APT_TIMEOUT_MS }
}

export function aptUpgrade(): Command {
  return { argv: ['apt-get', 'upgrade', '-y', '-q', ...KEEP_CONFIG], env: APT_ENV, timeoutMs: APT_TIMEOUT_MS }
}

export function aptInstall(packages: string[]): Command {
  return { argv: ['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...KEEP_CONFIG, ...packages], env: APT_ENV, timeoutMs: APT_TIMEOUT_MS }
}

/** Package name -> candidate version (null when apt knows no installable version). */
export function parseAptPolicy(text: string): Record<string, string | null> {
  const out: Record<string, string | null> = {}
  let current: string | null = null
  for (const line of text.split('\n')) {
    const header = /^(\S+):$/.exec(line)
    if (header) current = header[1]!
    const candidate = /^\s+Candidate:\s+(\S+)/.exec(line)
    if (candidate && current) out[current] = candidate[1] === '(none)' ? null : candidate[1]!
  }
  return out
}

// Which package gives `docker compose` (or, failing that, `docker-compose`) depends on where the
// droplet's apt looks: Docker's own repository, Ubuntu, or Debian (v1 on 12, v2 on 13).
export const COMPOSE_PACKAGES = ['docker-compose-plugin', 'docker-compose-v2', 'docker-compose'] as const

export function dockerPackages(candidates: Record<string, string | null>): string[] {
  const compose = COMPOSE_PACKAGES.find((name) => candidates[name])
  return compose ? ['docker.io', compose] : ['docker.io']
}

/** `install ok installed` on stdout when the package is installed (exit 1 when dpkg never heard of it). */
export function dpkgStatus(pkg: string): Command {
  return { argv: ['dpkg-query', '--show', '--showformat=${Status}', pkg], mutates: false, timeoutMs: 30_000 }
}

export function isInstalled(dpkgStatusOutput: string): boolean {
  return dpkgStatusOutput.trim() === 'install ok installed'
}

// dpkg-statoverride: an owner and mode for a path that dpkg itself applies, on this install and
// every upgrade of the package shipping it (a plain chown/chmod would be undone by the next one).

export interface StatOverride {
  owner: string
  group: string
  /** octal, as dpkg-statoverride prints it (2775) */
  mode: string
}

/** Exit 0 with `owner group mode path` when an override exists, exit 1 when none. */
export function statOverrideList(file: string): Command {
  return { argv: ['dpkg-statoverride', '--list', file], mutates: false, timeoutMs: 30_000 }
}

export function parseStatOverride(line: string): StatOverride | null {
  const [owner, group, mode] = line.trim().split(/\s+/)
  return owner && group && mode && /^[0-7]{3,4}$/.test(mode) ? { owner, group, mode } : null
}

/** `--update`: applied to the path now, not only at the next install. */
export function statOverrideAdd(file: string, o: StatOverride): Command {
  return { argv: ['dpkg-statoverride', '--update', '--add', o.owner, o.group, o.mode, file], timeoutMs: 30_000 }
}

export function statOverrideRemove(file: string): Command {
  return { argv: ['dpkg-statoverride', '--remove', file], timeoutMs: 30_000 }
}
