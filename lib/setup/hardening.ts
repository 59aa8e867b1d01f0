import fs from 'node:fs'
import path from 'node:path'
import { aptInstall, isInstalled } from '../commands/apt.ts'
import { writeFileAtomic } from '../core/atomic-file.ts'
import { OpsError } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { looksTransient, retry } from '../core/retry.ts'
import { $, $read, isDryRun } from '../core/shell.ts'
import { parsePasswd } from '../commands/host.ts'

// The host itself (issue 21): sshd takes keys only, and security updates install themselves.
// Each is on by default with an opt-out (--no-ssh-hardening, --no-unattended-upgrades, or
// SETUP_SSH_HARDENING=false / SETUP_UNATTENDED_UPGRADES=false) for operators who manage them.

/**
 * sshd keeps the first value it reads for a keyword and Debian's sshd_config includes
 * sshd_config.d/*.conf at its top, in name order: "01-" comes before cloud-init's
 * 50-cloud-init.conf, which turns password login back on on some images.
 */
/** root's files in root's directories, 644 whatever the umask */
const ROOT = { owner: { uid: 0, gid: 0 } }

export const SSHD_DROP_IN = '/etc/ssh/sshd_config.d/01-toogoodtogo-hardening.conf'
export const SSH_SERVER_PACKAGE = 'openssh-server'

export const SSHD_SETTINGS = {
  PasswordAuthentication: 'no',
  KbdInteractiveAuthentication: 'no',
  PermitRootLogin: 'prohibit-password',
} as const

export function sshdDropIn(): string {
  return [
    '# Written by setup-droplet (toogoodtogo): keys only, root by key only.',
    '# Opt out: remove this file and run setup-droplet with --no-ssh-hardening.',
    ...Object.entries(SSHD_SETTINGS).map(([key, value]) => `${key} ${value}`),
    '',
  ].join('\n')
}

/** The settings `sshd -T` reports otherwise (an earlier file set them first). */
export function sshdSettingsNotApplied(effective: string): string[] {
  const values = new Map(effective.split('\n').map((l) => l.trim().split(/\s+/)).map(([k = '', v = '']) => [k.toLowerCase(), v.toLowerCase()]))
  return Object.entries(SSHD_SETTINGS)
    .filter(([key, wanted]) => {
      const got = values.get(key.toLowerCase())
      // OpenSSH before 9.x prints prohibit-password under its old name
      return got !== wanted && !(wanted === 'prohibit-password' && got === 'without-password')
    })
    .map(([key]) => `${key} is ${values.get(key.toLowerCase()) ?? 'unset'}`)
}

/** An authorized_keys text with at least one key (options before the key type are allowed). */
export function hasAuthorizedKey(text: string): boolean {
  return text.split('\n').some((line) => !line.trim().startsWith('#') && /(^|\s)(ssh-(ed25519|rsa|dss)|ecdsa-sha2-[\w-]+|sk-[\w@.-]+)\s+AAAA[0-9A-Za-z+/=]+/.test(line))
}

function readAuthorizedKeys(home: string): string {
  return ['authorized_keys', 'authorized_keys2'].map((f) => {
    try {
      return fs.readFileSync(path.join(home, '.ssh', f), 'utf8')
    } catch {
      return ''
    }
  }).join('\n')
}

/**
 * Before any change: password login goes away only when the operator keeps a way in as root, a
 * key of root's or of the account that ran sudo. Returns whether sshd is there to harden.
 */
export async function checkSshAccess(sudoUser: string | undefined): Promise<boolean> {
  if (!(await isInstalled(SSH_SERVER_PACKAGE))) return false
  const accounts = ['root', ...(sudoUser && sudoUser !== 'root' ? [sudoUser] : [])]
  for (const account of accounts) {
    const entry = parsePasswd((await $read({ nothrow: true, timeoutMs: 10_000 })`getent passwd ${account}`).stdout)
    if (entry && hasAuthorizedKey(readAuthorizedKeys(entry.home))) return true
  }
  throw new OpsError('config', `SSH hardening turns password login off, but ${accounts.join(' and ')} ${accounts.length > 1 ? 'have' : 'has'} no key in ~/.ssh/authorized_keys: that would lock you out. Add your public key (ssh-copy-id root@this-host), or keep password login with --no-ssh-hardening (SETUP_SSH_HARDENING=false). Nothing was changed`)
}

/** The drop-in, checked by `sshd -t` before sshd reloads (a bad one is removed again), then what sshd really applies. */
export async function hardenSsh(): Promise<void> {
  const current = readOrNull(SSHD_DROP_IN)
  const wanted = sshdDropIn()
  if (current === wanted) {
    log.info(`SSH: ${SSHD_DROP_IN} already in place (keys only, root by key only)`)
  } else if (isDryRun()) {
    process.stdout.write(`[dry-run] write ${SSHD_DROP_IN} (mode 644)\n`)
    await reloadSsh()
    return
  } else {
    if (!fs.existsSync(path.dirname(SSHD_DROP_IN))) throw new OpsError('config', `${path.dirname(SSHD_DROP_IN)} does not exist: this sshd reads no drop-in files. Harden /etc/ssh/sshd_config yourself and run with --no-ssh-hardening`)
    writeFileAtomic(SSHD_DROP_IN, wanted, 0o644, ROOT)
    // the whole configuration, drop-in included, before any reload
    const test = await $read({ nothrow: true, timeoutMs: 30_000 })`sshd -t`
    if (test.exitCode !== 0) {
      if (current === null) fs.rmSync(SSHD_DROP_IN, { force: true })
      else writeFileAtomic(SSHD_DROP_IN, current, 0o644, ROOT)
      throw new OpsError('config', `sshd -t refuses the SSH configuration with ${SSHD_DROP_IN}: ${(test.stderr || test.stdout).trim()}; the file was taken back and sshd not reloaded. Fix /etc/ssh/sshd_config, or run with --no-ssh-hardening`)
    }
    log.info(`SSH: wrote ${SSHD_DROP_IN}: ${Object.entries(SSHD_SETTINGS).map(([k, v]) => `${k} ${v}`).join(', ')}`)
    await reloadSsh()
  }
  // the values sshd would use, lower-case keywords
  const notApplied = sshdSettingsNotApplied((await $read({ nothrow: true, timeoutMs: 30_000 })`sshd -T`).stdout)
  if (notApplied.length) log.warn(`SSH: sshd does not apply ${notApplied.join(', ')}: a file read before ${SSHD_DROP_IN} (sshd_config itself, or an earlier one in sshd_config.d) sets it first; change it there`)
}

export const UNATTENDED_PACKAGE = 'unattended-upgrades'
export const AUTO_UPGRADES_FILE = '/etc/apt/apt.conf.d/20auto-upgrades'

/**
 * The apt timers refresh the lists and run unattended-upgrade daily; the package's own
 * 50unattended-upgrades keeps it to the distribution's security updates, without reboots.
 */
export function autoUpgradesContent(): string {
  return 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n'
}

export async function enableUnattendedUpgrades(): Promise<void> {
  if (await isInstalled(UNATTENDED_PACKAGE)) log.info(`${UNATTENDED_PACKAGE} already installed`)
  else await retry(() => aptInstall([UNATTENDED_PACKAGE]), { isTransient: looksTransient, what: 'apt-get install' })
  if (readOrNull(AUTO_UPGRADES_FILE) === autoUpgradesContent()) {
    log.info(`Unattended security upgrades: already on (${AUTO_UPGRADES_FILE})`)
    return
  }
  if (isDryRun()) process.stdout.write(`[dry-run] write ${AUTO_UPGRADES_FILE} (mode 644)\n`)
  else writeFileAtomic(AUTO_UPGRADES_FILE, autoUpgradesContent(), 0o644, ROOT)
  log.info(`Unattended security upgrades: on (${AUTO_UPGRADES_FILE}; daily, security updates only, no automatic reboot)`)
}

/** A running sshd reads the new configuration; one not running reads it when it starts. */
function reloadSsh() {
  return $({ timeoutMs: 60_000 })`systemctl try-reload-or-restart ssh.service`
}

function readOrNull(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch {
    return null
  }
}
