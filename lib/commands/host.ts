import type { Command } from '../core/runner.ts'

// The host's own tools for setup-droplet's steps, as builders: the deploy user (id, getent, useradd,
// setpriv), directories (install, mv, rm), TLS (openssl, certbot), with the parsers of what they
// print. ssh-keygen is in ssh.ts. Nothing here runs anything; unit tests compare the arrays.

// ---- the deploy user and directories -----------------------------------------------------------

export function userExists(user: string): Command {
  return { argv: ['id', '-u', user], mutates: false, timeoutMs: 10_000 }
}

export function userGroups(user: string): Command {
  return { argv: ['id', '-nG', user], mutates: false, timeoutMs: 10_000 }
}

export function groupExists(group: string): Command {
  return { argv: ['getent', 'group', group], mutates: false, timeoutMs: 10_000 }
}

/** A login user (operators `sudo -iu deploy` to run deploys) with no password: it cannot log in by one. */
export function createUser(user: string): Command {
  return { argv: ['useradd', '--create-home', '--shell', '/bin/bash', '--user-group', user], timeoutMs: 30_000 }
}

export function createSystemGroup(group: string): Command {
  return { argv: ['groupadd', '--system', group], timeoutMs: 30_000 }
}

export function addToGroup(user: string, group: string): Command {
  return { argv: ['usermod', '--append', '--groups', group, user], timeoutMs: 30_000 }
}

/**
 * Creates the directory or, when it exists, sets its owner and mode: the same end state either way.
 * It follows a link at `dir`: only for root's own places (/etc/letsencrypt); a directory in one
 * the deploy user owns is lib/setup/hand-over.ts's ensureDir.
 */
export function installDir(dir: string, mode: string, owner: string): Command {
  return { argv: ['install', '-d', '-m', mode, '-o', owner, '-g', owner, dir], timeoutMs: 30_000 }
}

// ---- running as the deploy user -----------------------------------------------------------------

/** Who the application's files belong to: the deploy user, from `getent passwd`. */
export interface Account {
  user: string
  /** numeric gid, or the user's own group name when the user does not exist yet (a dry run) */
  group: string
  home: string
}

export function passwdEntry(user: string): Command {
  return { argv: ['getent', 'passwd', user], mutates: false, timeoutMs: 10_000 }
}

/** `deploy:x:1000:1000::/home/deploy:/bin/bash` -> the account; null for anything else. */
export function parsePasswd(line: string): Account | null {
  const [user, , uid, gid, , home] = line.trim().split(':')
  if (!user || !uid || !gid || !home || !/^\d+$/.test(gid)) return null
  return { user, group: gid, home }
}

/**
 * The command as `account` would run it (the same switch lib/core/deploy-user.ts makes for the
 * scripts): git then uses the deploy user's own key and known_hosts, and everything it writes
 * belongs to that user. HOME is set too (setpriv keeps root's), and the working directory is the
 * user's home, since root's may be unreadable to it.
 */
export function asUser(account: Account, command: Command): Command {
  return {
    ...command,
    argv: ['setpriv', `--reuid=${account.user}`, `--regid=${account.group}`, '--init-groups', '--', ...command.argv],
    env: { ...command.env, HOME: account.home, USER: account.user, LOGNAME: account.user },
    cwd: command.cwd ?? account.home,
  }
}

// ---- the deploy key ----------------------------------------------------------------------------

/**
 * Where the deploy user's key for the application repository lives: one setup-droplet generates
 * is the user's default ed25519 key; an operator's own (DEPLOY_KEY_FILE) is copied beside it
 * under its own name, so it never replaces a key the user already had.
 */
export function deployKeyPath(home: string, operatorKey: boolean): string {
  return `${home.replace(/\/$/, '')}/.ssh/${operatorKey ? 'toogoodtogo_deploy_key' : 'id_ed25519'}`
}

export function move(from: string, to: string): Command {
  return { argv: ['mv', '--no-target-directory', from, to], timeoutMs: 60_000 }
}

export function removeTree(dir: string): Command {
  return { argv: ['rm', '-rf', '--one-file-system', dir], timeoutMs: 5 * 60_000 }
}

/** The newest tag that looks like a release (v1.2.0), for a first start with no APP_VERSION given. */
export function newestReleaseTag(tagsNewestFirst: string): string | null {
  return tagsNewestFirst.split('\n').map((t) => t.trim()).find((t) => /^v?\d+\.\d+\.\d+$/.test(t)) ?? null
}

// ---- TLS ---------------------------------------------------------------------------------------

/** Where nginx reads them (deployment/nginx/ssl.conf.template): $LETSENCRYPT_DIR/live/$DOMAIN/. */
export function certificatePaths(letsencryptDir: string, domain: string): { dir: string; fullchain: string; privkey: string } {
  const dir = `${letsencryptDir}/live/${domain}`
  return { dir, fullchain: `${dir}/fullchain.pem`, privkey: `${dir}/privkey.pem` }
}

export function selfSignedCertificate(letsencryptDir: string, domain: string): Command {
  const paths = certificatePaths(letsencryptDir, domain)
  return {
    argv: [
      'openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '825',
      '-subj', `/CN=${domain}`, '-addext', `subjectAltName=DNS:${domain}`,
      '-keyout', paths.privkey, '-out', paths.fullchain,
    ],
    timeoutMs: 60_000,
  }
}

export const DEFAULT_LETSENCRYPT_DIR = '/etc/letsencrypt'

export interface CertbotOptions {
  domain: string
  email: string | null
  staging: boolean
  letsencryptDir: string
  /** shell commands certbot runs around each renewal: free port 80, then give it back */
  preHook: string
  postHook: string
}

/**
 * The first certificate comes from certbot's own standalone server: nginx cannot start without a
 * certificate, and nothing else holds port 80 yet. The hooks are saved in the renewal
 * configuration, so the package's renewal timer stops nginx for the seconds a renewal takes.
 */
export function certbotCertonly(o: CertbotOptions): Command {
  return {
    argv: [
      'certbot', 'certonly', '--standalone', '--non-interactive', '--agree-tos',
      ...(o.email ? ['--email', o.email] : ['--register-unsafely-without-email']),
      ...(o.staging ? ['--staging'] : []),
      // Only when moved: the package's renewal timer runs a plain `certbot renew`, which reads
      // /etc/letsencrypt and would never renew certificates kept elsewhere.
      ...(o.letsencryptDir === DEFAULT_LETSENCRYPT_DIR ? [] : ['--config-dir', o.letsencryptDir]),
      '--domain', o.domain,
      '--pre-hook', o.preHook,
      '--post-hook', o.postHook,
    ],
    timeoutMs: 10 * 60_000,
  }
}

/** One argv as a line for `sh -c` (certbot's hooks are shell commands). */
export function shellLine(argv: string[]): string {
  return argv.map((arg) => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`)).join(' ')
}
