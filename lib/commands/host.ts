import type { Command } from '../core/runner.ts'

// Builders and decisions for setup-droplet's own steps: the deploy user and its key, TLS, with the
// parsers of what they print (a command only one step runs is written inline in that step).
// Nothing here runs anything; unit tests compare the arrays.

// ---- the deploy user -----------------------------------------------------------------------------

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

// ---- the deploy key ----------------------------------------------------------------------------

/**
 * Where the deploy user's key for the application repository lives: one setup-droplet generates
 * is the user's default ed25519 key; an operator's own (DEPLOY_KEY_FILE) is copied beside it
 * under its own name, so it never replaces a key the user already had.
 */
export function deployKeyPath(home: string, operatorKey: boolean): string {
  return `${home.replace(/\/$/, '')}/.ssh/${operatorKey ? 'toogoodtogo_deploy_key' : 'id_ed25519'}`
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
