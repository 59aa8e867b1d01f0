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

export function aptPolicy(packages: string[]): Command {
  return { argv: ['apt-cache', 'policy', ...packages], mutates: false, timeoutMs: 60_000 }
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
