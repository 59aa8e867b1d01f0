import { YAML } from 'zx'
import type { Command } from './runner.ts'

// Pure command builders and decisions for setup-droplet's steps: apt, Docker, ufw, the deploy
// user, directories, git, TLS. Nothing here runs anything (lib/runner.ts does); unit tests compare
// the arrays.

// ---- packages ----------------------------------------------------------------------------------

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

// ---- Docker ------------------------------------------------------------------------------------

export function dockerInfo(): Command {
  return { argv: ['docker', 'info', '--format', '{{.ServerVersion}}'], mutates: false, timeoutMs: 30_000 }
}

// ---- firewall ----------------------------------------------------------------------------------

export const WEBHOOK_PORTS = ['80/tcp', '443/tcp'] as const

export function ufw(...args: string[]): Command {
  return { argv: ['ufw', ...args], timeoutMs: 60_000 }
}

/** `ufw show added` works whether or not the firewall is active yet. */
export function ufwShowAdded(): Command {
  return { argv: ['ufw', 'show', 'added'], mutates: false, timeoutMs: 60_000 }
}

/** The rules `ufw show added` lists, as the words after `ufw` ("allow 22/tcp"). */
export function parseUfwAdded(text: string): string[] {
  return text.split('\n').map((l) => /^ufw (.+)$/.exec(l.trim())?.[1]?.trim()).filter((r): r is string => Boolean(r))
}

/**
 * Deny incoming, allow SSH, and 80/443 only in webhook mode; a polling host that was once in
 * webhook mode loses its 80/443 rules. Rules already present are not added again.
 */
export function firewallCommands(added: string[], options: { webhook: boolean; sshPort: number }): Command[] {
  const has = (rule: string) => added.includes(rule)
  const wanted = [`${options.sshPort}/tcp`, ...(options.webhook ? WEBHOOK_PORTS : [])]
  const unwanted = options.webhook ? [] : WEBHOOK_PORTS.filter((port) => has(`allow ${port}`))
  return [
    ufw('default', 'deny', 'incoming'),
    ufw('default', 'allow', 'outgoing'),
    ...wanted.filter((port) => !has(`allow ${port}`)).map((port) => ufw('allow', port)),
    ...unwanted.map((port) => ufw('delete', 'allow', port)),
    // --force: enabling over SSH otherwise asks whether to cut the connection; SSH is allowed above.
    ufw('--force', 'enable'),
  ]
}

/**
 * Docker publishes ports by writing its own iptables rules, ahead of ufw's: a published port is
 * open to the internet whatever ufw says. Only nginx, in webhook mode, may publish, and only 80
 * and 443; no service may share the host's network. Returns what breaks that, per service.
 */
export function publishedPortProblems(composeYaml: string): string[] {
  const doc = (YAML.parse(composeYaml) ?? {}) as { services?: Record<string, Record<string, unknown> | null> }
  const problems: string[] = []
  for (const [name, service] of Object.entries(doc.services ?? {})) {
    if (!service) continue
    if (service.network_mode === 'host') problems.push(`${name} uses network_mode: host (every port it opens is public)`)
    const ports = Array.isArray(service.ports) ? service.ports : []
    if (ports.length === 0) continue
    if (name !== 'nginx') {
      problems.push(`${name} publishes ${ports.map(describePort).join(', ')}`)
      continue
    }
    const targets = ports.map(containerPort)
    const other = targets.filter((p) => p !== '80' && p !== '443')
    if (other.length) problems.push(`nginx publishes container port${other.length > 1 ? 's' : ''} ${other.join(', ')} besides 80 and 443`)
  }
  return problems
}

function describePort(port: unknown): string {
  return typeof port === 'object' && port ? JSON.stringify(port) : String(port)
}

/** "80", "127.0.0.1:8080:80", "${X:-80}:80/tcp", { target: 80 } -> the container side. */
function containerPort(port: unknown): string {
  if (typeof port === 'object' && port && 'target' in port) return String((port as { target: unknown }).target)
  const text = String(port).replace(/\/(tcp|udp)$/, '')
  return text.slice(text.lastIndexOf(':') + 1)
}

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

/** Creates the directory or, when it exists, sets its owner and mode: the same end state either way. */
export function installDir(dir: string, mode: string, owner: string): Command {
  return { argv: ['install', '-d', '-m', mode, '-o', owner, '-g', owner, dir], timeoutMs: 30_000 }
}

export function chown(owner: string, files: string[], recursive = false): Command {
  return { argv: ['chown', ...(recursive ? ['-R'] : []), `${owner}:${owner}`, ...files], timeoutMs: 5 * 60_000 }
}

export function chmod(mode: string, files: string[]): Command {
  return { argv: ['chmod', mode, ...files], timeoutMs: 30_000 }
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
 * The command as `account` would run it (the same switch lib/deploy-user.ts makes for the
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

// ---- git ---------------------------------------------------------------------------------------

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
 * The clone keeps the ssh command in its own config (core.sshCommand), so deploy's later `git
 * fetch` as the deploy user uses the same key with nothing in the environment.
 */
export function gitClone(url: string, dest: string, sshCommand: string | null = null): Command {
  const config = sshCommand ? ['--config', `core.sshCommand=${sshCommand}`] : []
  return { argv: ['git', 'clone', '--quiet', '--no-checkout', ...config, url, dest], env: gitEnv(sshCommand), timeoutMs: 15 * 60_000 }
}

/** Can this user read the repository? One round trip, nothing written (but known_hosts, on first use). */
export function gitLsRemote(url: string, sshCommand: string | null): Command {
  return { argv: ['git', 'ls-remote', '--quiet', url, 'HEAD'], env: gitEnv(sshCommand), mutates: false, timeoutMs: 60_000 }
}

export function gitFetchTags(dir: string, sshCommand: string | null): Command {
  return { argv: ['git', '-C', dir, 'fetch', '--quiet', '--tags', 'origin'], env: gitEnv(sshCommand), timeoutMs: 5 * 60_000 }
}

export function gitRemoteUrl(dir: string): Command {
  return { argv: ['git', '-C', dir, 'remote', 'get-url', 'origin'], env: gitEnv(), mutates: false, timeoutMs: 30_000 }
}

export function gitConfigGet(dir: string, key: string): Command {
  return { argv: ['git', '-C', dir, 'config', '--local', '--get', key], env: gitEnv(), mutates: false, timeoutMs: 30_000 }
}

export function gitConfigSet(dir: string, key: string, value: string): Command {
  return { argv: ['git', '-C', dir, 'config', '--local', key, value], env: gitEnv(), timeoutMs: 30_000 }
}

/** Newest release first by version order (v1.10.0 after v1.9.0), not by name. */
export function gitTags(dir: string): Command {
  return { argv: ['git', '-C', dir, 'tag', '--list', '--sort=-v:refname'], env: gitEnv(), mutates: false, timeoutMs: 30_000 }
}

/** The commit `ref` names, or HEAD's: comparing them tells whether a checkout would change anything. */
export function gitRevParse(dir: string, ref: string): Command {
  return { argv: ['git', '-C', dir, 'rev-parse', '--verify', '--quiet', `${ref}^{commit}`], env: gitEnv(), mutates: false, timeoutMs: 30_000 }
}

export function gitCheckout(dir: string, ref: string): Command {
  return { argv: ['git', '-C', dir, 'checkout', '--quiet', '--detach', ref], env: gitEnv(), timeoutMs: 5 * 60_000 }
}

export function gitSafeDirectories(): Command {
  return { argv: ['git', 'config', '--system', '--get-all', 'safe.directory'], env: gitEnv(), mutates: false, timeoutMs: 10_000 }
}

/** root and the deploy user both run git in APP_DIR; git refuses a repository owned by another user otherwise. */
export function addGitSafeDirectory(dir: string): Command {
  return { argv: ['git', 'config', '--system', '--add', 'safe.directory', dir], env: gitEnv(), timeoutMs: 10_000 }
}

/**
 * The lines of a failed git command's stderr that say why (`Permission denied (publickey)`,
 * `Repository not found`), without the advice git prints after every remote failure.
 */
export function gitFailureReason(stderr: string): string {
  const boilerplate = /^(Please make sure you have the correct access rights|and the repository exists\.?)$/
  return stderr.split('\n').map((l) => l.trim()).filter((l) => l && !boilerplate.test(l)).slice(0, 3).join(' | ')
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

/** No passphrase: the key is used unattended by deploys and timers; its file is the protection (600). */
export function sshKeygen(keyFile: string, comment: string): Command {
  return { argv: ['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', keyFile], timeoutMs: 30_000 }
}

/** The public half, derived from the private key (an operator's key may come without its .pub). */
export function sshPublicKey(keyFile: string): Command {
  // -P '': a key with a passphrase fails here instead of asking for it.
  return { argv: ['ssh-keygen', '-y', '-P', '', '-f', keyFile], mutates: false, timeoutMs: 30_000 }
}

/** Copies a file into place with its owner and mode in one step (never readable by others in between). */
export function installFile(from: string, to: string, mode: string, owner: string): Command {
  return { argv: ['install', '-m', mode, '-o', owner, '-g', owner, from, to], timeoutMs: 30_000 }
}

// ---- the first migration -----------------------------------------------------------------------

/**
 * MIGRATE_COMMAND in the bot's image, as deploy runs it, but without --no-deps: on a fresh host
 * `run` waits for the database's healthcheck (depends_on) while it initialises.
 */
export function firstMigration(stack: string[], migrate: string, env: Record<string, string>): Command {
  return { argv: [...stack, 'run', '--rm', '-T', 'bot', ...migrate.trim().split(/\s+/)], env, timeoutMs: 10 * 60_000 }
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

// ---- misc --------------------------------------------------------------------------------------

/** The first executable called `name` on PATH, like `command -v`. */
export function findOnPath(name: string, pathVar: string, isExecutable: (file: string) => boolean): string | null {
  for (const dir of pathVar.split(':').filter(Boolean)) {
    const file = `${dir.replace(/\/$/, '')}/${name}`
    if (isExecutable(file)) return file
  }
  return null
}
