import { $, $read } from '../core/shell.ts'

// apt, unattended, as setup's steps share it, and what its output means.

// No debconf question, no "which services to restart" dialog (needrestart on Ubuntu), and a
// changed config file keeps the local version: an unattended upgrade must never stop and ask.
const APT_ENV = { DEBIAN_FRONTEND: 'noninteractive', NEEDRESTART_MODE: 'a', APT_LISTCHANGES_FRONTEND: 'none' }
const KEEP_CONFIG = ['-o', 'Dpkg::Options::=--force-confdef', '-o', 'Dpkg::Options::=--force-confold']
const APT_TIMEOUT_MS = 30 * 60_000

const apt = $({ env: APT_ENV, timeoutMs: APT_TIMEOUT_MS })

export function aptUpdate() {
  return apt`apt-get update -q`
}

export function aptUpgrade() {
  return apt`apt-get upgrade -y -q ${KEEP_CONFIG}`
}

export function aptInstall(packages: string[]) {
  return apt`apt-get install -y -q --no-install-recommends ${KEEP_CONFIG} ${packages}`
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

/** dpkg-query prints `install ok installed` when it is (exit 1 when dpkg never heard of it). */
export async function isInstalled(pkg: string): Promise<boolean> {
  // one word for the shell: bash must not expand ${Status}
  const status = await $read({ nothrow: true, timeoutMs: 30_000 })`dpkg-query --show ${'--showformat=${Status}'} ${pkg}`
  return isInstalledStatus(status.stdout)
}

export function isInstalledStatus(dpkgStatusOutput: string): boolean {
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

export function parseStatOverride(line: string): StatOverride | null {
  const [owner, group, mode] = line.trim().split(/\s+/)
  return owner && group && mode && /^[0-7]{3,4}$/.test(mode) ? { owner, group, mode } : null
}
