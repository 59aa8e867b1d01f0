import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { gitEnv, gitFailureReason, gitSshCommand, isSshUrl, sshHost } from '../commands/git.ts'
import { withoutSeparator } from '../core/cli.ts'
import { TOOLKIT_DIR } from '../core/config.ts'
import { OpsError } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { ask, canPrompt } from '../core/prompt.ts'
import { looksTransient, retry } from '../core/retry.ts'
import { $, $read, isDryRun, type ShellOptions } from '../core/shell.ts'
import { ensureDir, installFileAs } from './hand-over.ts'
import { deployKeyPath, newestReleaseTag, type Account } from '../commands/host.ts'
import { step, type Plan } from './plan.ts'

// The application repository, with the deploy user's own access: the deploy user clones and,
// later, deploy fetches as that user, never with root's credentials. For an ssh URL that access
// is a deploy key (generated, or the operator's DEPLOY_KEY_FILE), its host in known_hosts.

/** A dry run on a fresh host cannot know the newest tag before the clone it only describes. */
export const UNKNOWN_TAG = 'NEWEST_RELEASE_TAG'

/** Clones (or keeps) APP_DIR and checks out the release to start; returns that release. */
export async function cloneRepository(plan: Plan, account: Account): Promise<string> {
  step('Cloning repository')
  const { s } = plan
  const dir = s.appDir
  const as = setpriv(account)
  let version = plan.requestedVersion
  let ssh: string | null
  if (isGitRepo(dir)) {
    const origin = (await $read(deployUser(account, { nothrow: true }))`${as} git -C ${dir} remote get-url origin`).stdout.trim()
    if (s.APP_REPO_URL && origin !== s.APP_REPO_URL) log.warn(`${dir} is a clone of ${origin}, not of APP_REPO_URL ${s.APP_REPO_URL}; keeping it`)
    else log.info(`Repository already cloned at ${dir}`)
    ssh = await repositoryAccess(s.DEPLOY_KEY_FILE, account, origin)
    // A clone made before the deploy key (or with another one): deploy's fetch must use this key.
    if (ssh && (await $read(deployUser(account, { nothrow: true }))`${as} git -C ${dir} config --local --get core.sshCommand`).stdout.trim() !== ssh) {
      await $(deployUser(account))`${as} git -C ${dir} config --local core.sshCommand ${ssh}`
    }
  } else {
    if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) throw new OpsError('config', `${dir} exists, is not empty and is not a git clone: move it away or set APP_DIR`)
    const url = s.APP_REPO_URL ?? (await ask('Enter the application Git repository URL'))
    ssh = await repositoryAccess(s.DEPLOY_KEY_FILE, account, url)
    log.info(`Cloning ${url} into ${dir} as ${account.user}`)
    // Cloned beside its place and moved in whole: an interrupted clone never looks like a clone.
    const partial = `${dir}.partial`
    if (fs.existsSync(partial)) await $`rm -rf --one-file-system ${partial}`
    // The clone keeps the ssh command in its own config: deploy's later fetch uses the same key.
    const config = ssh ? ['--config', `core.sshCommand=${ssh}`] : []
    await retry(() => $(deployUser(account, { ssh, timeoutMs: 15 * 60_000 }))`${as} git clone --quiet --no-checkout ${config} ${url} ${partial}`, { isTransient: looksTransient, what: 'git clone' })
    version ??= await newestTag(account, partial, url)
    log.info(`Checking out ${version}`)
    await $(deployUser(account))`${as} git -C ${partial} checkout --detach --force --quiet ${version}`
    await $`mv --no-target-directory ${partial} ${dir}`
  }
  version ??= await newestTag(account, dir, dir)
  await checkoutVersion(account, { dir, version, ssh })
  // root and the deploy user both run git in APP_DIR; git refuses a repository owned by another user otherwise.
  const safe = (await $read({ nothrow: true, env: gitEnv() })`git config --system --get-all safe.directory`).stdout.split('\n').map((l) => l.trim())
  if (!safe.includes(dir)) await $({ env: gitEnv() })`git config --system --add safe.directory ${dir}`
  return version
}

export function isGitRepo(dir: string): boolean {
  return fs.existsSync(path.join(dir, '.git'))
}

/**
 * An existing clone is moved to the release this run starts (APP_VERSION changed since the run
 * that cloned it), fetching first when it does not know that tag yet; a clone already there is
 * left untouched (a checkout would still rewrite its index).
 */
async function checkoutVersion(account: Account, { dir, version, ssh }: { dir: string; version: string; ssh: string | null }): Promise<void> {
  if (isDryRun() && !isGitRepo(dir)) return
  const as = setpriv(account)
  const commit = async (ref: string) => (await $read(deployUser(account, { nothrow: true }))`${as} git -C ${dir} rev-parse --verify --quiet ${`${ref}^{commit}`}`).stdout.trim()
  let wanted = await commit(version)
  if (!wanted) {
    // --force, --prune: tags moved or deleted upstream move here too (a release tag means one commit).
    await retry(() => $read(deployUser(account, { ssh, timeoutMs: 5 * 60_000 }))`${as} git -C ${dir} fetch --quiet --tags --force --prune origin`, { isTransient: looksTransient, what: 'git fetch' })
    wanted = await commit(version)
    if (!wanted && !isDryRun()) throw new OpsError('config', `${dir} has no tag or commit ${version} (after git fetch): set APP_VERSION to a release of the repository`)
  }
  if (wanted && wanted === (await commit('HEAD'))) return
  log.info(`Checking out ${version} in ${dir}`)
  await $(deployUser(account))`${as} git -C ${dir} checkout --detach --force --quiet ${version}`
}

/** The newest vX.Y.Z tag, by version order (v1.10.0 after v1.9.0), not by name. */
async function newestTag(account: Account, dir: string, what: string): Promise<string> {
  if (isDryRun() && !fs.existsSync(dir)) return UNKNOWN_TAG
  const tags = (await $read(deployUser(account))`${setpriv(account)} git -C ${dir} tag --list --sort=-v:refname`).stdout
  const tag = newestReleaseTag(tags)
  if (!tag) throw new OpsError('config', `${what} has no release tag (vX.Y.Z): set APP_VERSION to the tag or commit to run`)
  return tag
}

/**
 * The deploy user's access to an ssh repository: its key (the operator's DEPLOY_KEY_FILE, copied
 * for it, or one generated for it), proven with `git ls-remote` as that user before anything is
 * cloned. The first connection records the host key (accept-new). Until the public key is added
 * to the repository: on a terminal, wait for the operator and try again; without one, stop with
 * exactly what to do (a re-run continues from here). Returns the ssh command git is to use; null
 * for other URLs (https, file), which git reads with the deploy user's own access as they are.
 */
async function repositoryAccess(operatorKey: string | undefined, account: Account, url: string): Promise<string | null> {
  if (!isSshUrl(url)) return null
  const key = deployKeyPath(account.home, Boolean(operatorKey))
  const as = setpriv(account)
  await ensureDir(path.dirname(key), 0o700, account.user)
  if (operatorKey) {
    if (!sameContent(operatorKey, key)) {
      log.info(`Installing the deploy key ${operatorKey} for ${account.user} as ${key}`)
      await installFileAs(operatorKey, key, 0o600, account.user)
    }
  } else if (!fs.existsSync(key)) {
    log.info(`Creating an SSH deploy key for ${account.user}: ${key}`)
    // No passphrase: deploys and timers use it unattended; its file is the protection (600).
    await $(deployUser(account))`${as} ssh-keygen -q -t ed25519 -N ${''} -C ${`${account.user}@${os.hostname()} toogoodtogo deploy key`} -f ${key}`
  }
  const ssh = gitSshCommand(key)
  if (isDryRun()) {
    log.info(`[dry-run] would check that ${account.user} can read ${url} with ${key}`)
    return ssh
  }
  let shown = false
  for (;;) {
    // One round trip, nothing written (but known_hosts, on first use).
    const probe = await $read(deployUser(account, { ssh, nothrow: true, timeoutMs: 60_000 }))`${as} git ls-remote --quiet ${url} HEAD`
    if (probe.exitCode === 0) {
      log.info(`${account.user} can read ${url} with its deploy key ${key}`)
      return ssh
    }
    const why = gitFailureReason(probe.stderr) || `git ls-remote exit code ${probe.exitCode}`
    log.warn(`${account.user} cannot read ${url} yet: ${why}`)
    if (!shown) {
      // -P '': a key with a passphrase fails here instead of asking for it.
      const publicKey = (await $read(deployUser(account, { nothrow: true }))`${as} ssh-keygen -y -P ${''} -f ${key}`).stdout.trim()
      log.info(`Add this public key to ${sshHost(url) ?? 'the repository'} as a read-only deploy key of the repository (GitHub: Settings > Deploy keys > Add deploy key, "Allow write access" unchecked; GitLab: Settings > Repository > Deploy keys):`)
      log.info(`Deploy key: ${publicKey || `(cannot read it: ssh-keygen -y -f ${key})`}`)
      shown = true
    }
    if (!canPrompt()) {
      throw new OpsError('config', `The deploy user ${account.user} cannot read ${url}: add the public key above (${key}.pub on this host) to the repository as a read-only deploy key, then run setup-droplet again with the same settings (${rerunLine()}); it continues from here`)
    }
    await ask('Press Enter once the deploy key is added to the repository, to try again (Ctrl-C to stop)', { fallback: '' })
  }
}

/**
 * Commands as the deploy user (the same switch lib/core/deploy-user.ts makes for the scripts): git
 * then uses that user's key and known_hosts, and what it writes is that user's. HOME too (setpriv
 * keeps root's), that user's home as the working directory (root's may be unreadable to it), and
 * never a credential prompt (gitEnv): a repository it cannot read fails with git's message.
 */
function setpriv(account: Account): string[] {
  return ['setpriv', `--reuid=${account.user}`, `--regid=${account.group}`, '--init-groups', '--']
}

function deployUser(account: Account, { ssh = null, ...options }: ShellOptions & { ssh?: string | null } = {}): ShellOptions {
  return { env: { ...gitEnv(ssh), HOME: account.home, USER: account.user, LOGNAME: account.user }, cwd: account.home, ...options }
}

function sameContent(a: string, b: string): boolean {
  try {
    return fs.readFileSync(a).equals(fs.readFileSync(b))
  } catch {
    return false
  }
}

function rerunLine(): string {
  return ['sudo', path.join(TOOLKIT_DIR, 'scripts', 'setup-droplet.sh'), ...withoutSeparator(process.argv.slice(2))].join(' ')
}
