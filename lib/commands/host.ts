// Decisions for setup-droplet's own steps: the deploy user and its key, TLS, with the parsers of
// what they print (the commands are written inline in the steps). Nothing here runs anything.

// ---- the deploy user -----------------------------------------------------------------------------

/** Who the application's files belong to: the deploy user, from `getent passwd`. */
export interface Account {
  user: string
  /** numeric gid, or the user's own group name when the user does not exist yet (a dry run) */
  group: string
  home: string
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
