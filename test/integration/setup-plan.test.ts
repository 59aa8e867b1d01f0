import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { parseCli } from '../../lib/core/cli.ts'
import { TOOLKIT_DIR } from '../../lib/core/config.ts'
import { renderEnvFile } from '../../lib/core/deployment-config.ts'
import type { Command, RunResult } from '../../lib/core/runner.ts'
import { setupDroplet, setupOptions, spec, type SetupOutcome } from '../../scripts/setup-droplet.ts'

// `setup-droplet --dry-run` on a fresh host, as data: zx's `$` is replaced by a recorder that
// answers the read-only probes the way a fresh Debian 12 droplet would (no Docker, no ufw, no
// deploy user) and records every command that would change something. The script's own command
// runs unchanged, from its first step to its last; its thin CLI entry (exit codes, signals) is
// the launchers' (setup-argv.test.ts).
const recorded: Command[] = []
let answer: (argv: string[]) => RunResult

async function tryRun(command: Command): Promise<RunResult> {
  if (command.mutates !== false) {
    recorded.push(command)
    return { exitCode: 0, stdout: '', stderr: '' }
  }
  return answer(command.argv)
}

async function run(command: Command): Promise<RunResult> {
  const result = await tryRun(command)
  if (result.exitCode !== 0) throw new Error(`${command.argv.join(' ')} failed`)
  return result
}

// The lines written inline with zx's `$` (a change) and `$read` (a read) go to the same recorder,
// as the argv the shell would run: each interpolated value one word, an array one word per element.
vi.mock('../../lib/core/shell.ts', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../lib/core/shell.ts')>()
  type Options = { env?: Record<string, string>; cwd?: string; timeoutMs?: number; nothrow?: boolean }
  const shell = (mutates: boolean, options: Options): unknown => (first: TemplateStringsArray | Options, ...args: unknown[]) => {
    if (!Array.isArray(first)) return shell(mutates, { ...options, ...(first as Options) })
    const command: Command = { argv: templateArgv(first as TemplateStringsArray, args), env: options.env, cwd: options.cwd, timeoutMs: options.timeoutMs, mutates }
    return options.nothrow ? tryRun(command) : run(command)
  }
  return { ...real, $: shell(true, {}), $read: shell(false, {}), isDryRun: () => true, setDryRun: () => {} }
})

function templateArgv(pieces: TemplateStringsArray, args: unknown[]): string[] {
  const words: string[] = []
  let word: string | null = null
  pieces.forEach((piece, i) => {
    for (const ch of piece) {
      if (/\s/.test(ch)) {
        if (word !== null) words.push(word)
        word = null
      } else word = (word ?? '') + ch
    }
    if (i >= args.length) return
    const arg = args[i]
    if (Array.isArray(arg)) {
      if (word !== null) words.push(word)
      word = null
      words.push(...arg.map(String))
    } else word = (word ?? '') + String(arg)
  })
  if (word !== null) words.push(word)
  return words
}

const DEBIAN_12_COMPOSE_POLICY = 'docker-compose:\n  Installed: (none)\n  Candidate: 1.29.2-3\n  Version table:\n'

function freshDebian12(argv: string[]): RunResult {
  const line = argv.join(' ')
  const no = { exitCode: 1, stdout: '', stderr: '' }
  if (line.startsWith('apt-cache policy')) return { exitCode: 0, stdout: DEBIAN_12_COMPOSE_POLICY, stderr: '' }
  // DigitalOcean's image: an SSH server, root's key given when the droplet was created
  if (line === 'dpkg-query --show --showformat=${Status} openssh-server') return { exitCode: 0, stdout: 'install ok installed', stderr: '' }
  if (line.startsWith('dpkg-query ')) return no
  if (line === 'getent passwd root') return { exitCode: 0, stdout: `root:x:0:0:root:${dir}/root:/bin/bash\n`, stderr: '' }
  if (line.startsWith('docker ') || line.startsWith('docker-compose ') || line.startsWith('ufw ')) return { exitCode: 127, stdout: '', stderr: 'command not found' }
  if (line.startsWith('id ') || line.startsWith('getent ') || line.startsWith('git config')) return no
  throw new Error(`unexpected probe on a fresh host: ${line}`)
}

let dir: string
let stdout: string[]
let stderr: string[]
const savedEnv = { ...process.env }

beforeEach(() => {
  recorded.length = 0
  answer = freshDebian12
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-plan-'))
  fs.mkdirSync(path.join(dir, 'root/.ssh'), { recursive: true })
  fs.writeFileSync(path.join(dir, 'root/.ssh/authorized_keys'), 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPlanKeyOfTheOperator0000000000000000000000 operator@laptop\n')
  stdout = []
  stderr = []
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => (stdout.push(String(chunk)), true))
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => (stderr.push(String(chunk)), true))
})

afterEach(() => {
  vi.restoreAllMocks()
  process.env = { ...savedEnv }
})

/** The directories and files root hands over (lib/setup/hand-over.ts), as the dry run prints them. */
function handOvers(): string[] {
  return stdout.filter((l) => /^\[dry-run\] (install|chown) /.test(l)).map((l) => l.trim())
}

/** The command with the options its CLI would give it (`--` first, as scripts/run.sh passes them). */
function dryRun(args: string[], env: Record<string, string>): Promise<SetupOutcome> {
  process.env = { PATH: savedEnv.PATH, DEPLOY_DIR: path.join(dir, 'opt/toogoodtogo'), BACKUP_DIR: path.join(dir, 'backups'), LOG_FILE: path.join(dir, 'log/deployment.log'), ...env }
  return setupDroplet(setupOptions(parseCli(spec, ['--', '--dry-run', ...args])))
}

const ANSWERS = { TELEGRAM_BOT_TOKEN: '123456:plan_token', STRIPE_API_KEY: 'sk_test_plan', BOT_IMAGE: 'registry.example.com/team/bot', APP_VERSION: 'v1.2.0', APP_REPO_URL: 'https://git.example.com/team/bot.git' }

describe('setup-droplet --dry-run on a fresh Debian 12 droplet', () => {
  it('polling mode: the exact commands, in the contract\'s order, and the files it would write', async () => {
    expect(await dryRun([], ANSWERS)).toBe('configured')
    const deploy = path.join(dir, 'opt/toogoodtogo')
    const compose = ['docker', 'compose', '--project-name', 'toogoodtogo', '--file', expect.stringMatching(/\/deployment\/docker-compose\.prod\.yml$/), '--env-file', `${deploy}/.env.production`]
    const keep = ['-o', 'Dpkg::Options::=--force-confdef', '-o', 'Dpkg::Options::=--force-confold']
    const asDeploy = ['setpriv', '--reuid=deploy', '--regid=deploy', '--init-groups', '--']
    expect(recorded.map((c) => c.argv)).toEqual([
      ['apt-get', 'update', '-q'],
      ['apt-get', 'upgrade', '-y', '-q', ...keep],
      ['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...keep, 'ufw', 'git', 'openssh-client', 'ca-certificates', 'openssl', 'logrotate', 'age', 'curl'],
      ['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...keep, 'docker.io', 'docker-compose'],
      ['systemctl', 'enable', '--now', 'docker.service'],
      ['groupadd', '--system', 'docker'],
      ['ufw', 'default', 'deny', 'incoming'],
      ['ufw', 'default', 'allow', 'outgoing'],
      ['ufw', 'allow', '22/tcp'],
      ['ufw', '--force', 'enable'],
      // sshd keys only (the drop-in below), unattended security upgrades
      ['systemctl', 'try-reload-or-restart', 'ssh.service'],
      ['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...keep, 'unattended-upgrades'],
      ['useradd', '--create-home', '--shell', '/bin/bash', '--user-group', 'deploy'],
      ['usermod', '--append', '--groups', 'docker', 'deploy'],
      // (the directories and owners: printed below, done without following a link)
      // As the deploy user, with its own access to the repository, never root's.
      [...asDeploy, 'git', 'clone', '--quiet', '--no-checkout', 'https://git.example.com/team/bot.git', `${deploy}/app.partial`],
      [...asDeploy, 'git', '-C', `${deploy}/app.partial`, 'checkout', '--detach', '--force', '--quiet', 'v1.2.0'],
      ['mv', '--no-target-directory', `${deploy}/app.partial`, `${deploy}/app`],
      ['git', 'config', '--system', '--add', 'safe.directory', `${deploy}/app`],
      ['systemctl', 'daemon-reload'],
      // postgres's image is built here, not pulled: POSTGRES_IMAGE with pgBackRest
      [...compose, 'pull', 'bot', 'redis'],
      ['docker', 'build', '--quiet', '--build-arg', 'POSTGRES_IMAGE=postgres:15', '--label', expect.stringMatching(/^toogoodtogo\.postgres\.build=[0-9a-f]{16}$/), '--tag', 'postgres:15-pgbackrest', path.join(TOOLKIT_DIR, 'deployment', 'postgres')],
      [...compose, 'up', '--detach', 'postgres', 'redis'],
      [...compose, 'run', '--rm', '-T', 'bot', 'alembic', 'upgrade', 'head'],
      [...compose, 'up', '--detach', '--remove-orphans'],
      ['systemctl', 'enable', 'toogoodtogo.service', 'toogoodtogo-healthcheck.service', 'toogoodtogo-backup.timer', 'toogoodtogo-restore-drill.timer'],
      ['systemctl', 'start', 'toogoodtogo.service', 'toogoodtogo-backup.timer', 'toogoodtogo-restore-drill.timer'],
    ])
    // What root hands to the deploy user (no chown of the log file: a dry run does not write it).
    expect(handOvers()).toEqual([
      `[dry-run] install -d -m 0750 -o deploy -g deploy ${deploy}`,
      `[dry-run] install -d -m 0700 -o deploy -g deploy ${path.join(dir, 'backups')}`,
      `[dry-run] install -d -m 0750 -o deploy -g deploy ${path.join(dir, 'log')}`,
      `[dry-run] chown deploy:deploy ${deploy}/.env.production; chmod 0600 ${deploy}/.env.production`,
      `[dry-run] chown deploy:deploy ${deploy}/.setup-complete; chmod 0644 ${deploy}/.setup-complete`,
      `[dry-run] chown deploy:deploy ${deploy}/setup_state.json; chmod 0644 ${deploy}/setup_state.json`,
    ])
    // Every git command: no credential prompt; the stack runs the tag it was told, as deploy passes it.
    const program = (c: Command) => (c.argv[0] === 'setpriv' ? c.argv[c.argv.indexOf('--') + 1] : c.argv[0])
    expect(recorded.filter((c) => program(c) === 'git')).toHaveLength(3)
    for (const c of recorded.filter((c) => program(c) === 'git')) expect(c.env).toMatchObject({ GIT_TERMINAL_PROMPT: '0' })
    for (const c of recorded.filter((c) => c.argv[0] === 'docker' && c.argv[1] === 'compose')) expect(c.env).toMatchObject({ APP_VERSION: 'v1.2.0' })
    // As the deploy user: setpriv with its groups (docker), its HOME, from its home directory (root's may be unreadable to it).
    for (const c of recorded.filter((c) => c.argv[0] === 'setpriv')) expect(c).toMatchObject({ env: { HOME: '/home/deploy', USER: 'deploy', LOGNAME: 'deploy' }, cwd: '/home/deploy' })
    // apt never stops to ask.
    for (const c of recorded.filter((c) => c.argv[0] === 'apt-get')) expect(c.env).toMatchObject({ DEBIAN_FRONTEND: 'noninteractive' })
    expect(stdout.filter((l) => l.startsWith('[dry-run] write')).map((l) => l.trim())).toEqual([
      '[dry-run] write /etc/ssh/sshd_config.d/01-toogoodtogo-hardening.conf (mode 644)',
      '[dry-run] write /etc/apt/apt.conf.d/20auto-upgrades (mode 644)',
      `[dry-run] write ${deploy}/.env.production (mode 600)`,
      '[dry-run] write /etc/systemd/system/toogoodtogo.service (mode 644)',
      '[dry-run] write /etc/systemd/system/toogoodtogo-healthcheck.service (mode 644)',
      '[dry-run] write /etc/systemd/system/toogoodtogo-backup.service (mode 644)',
      '[dry-run] write /etc/systemd/system/toogoodtogo-backup.timer (mode 644)',
      '[dry-run] write /etc/systemd/system/toogoodtogo-restore-drill.service (mode 644)',
      '[dry-run] write /etc/systemd/system/toogoodtogo-restore-drill.timer (mode 644)',
      '[dry-run] write /etc/systemd/system/toogoodtogo-failure@.service (mode 644)',
      '[dry-run] write /etc/logrotate.d/toogoodtogo (mode 644)',
      '[dry-run] write /usr/local/lib/toogoodtogo-notify-failure (mode 644)',
      // `tsx scripts/deploy.ts v1.2.0` from the toolkit directory, as the design card says
      '[dry-run] write /usr/local/bin/tsx (mode 755)',
      `[dry-run] write ${deploy}/.setup-complete (mode 644)`,
      `[dry-run] write ${deploy}/setup_state.json (mode 644)`,
    ])
    // Nothing was written, not even the log file (a plan is not an event), and no secret reached the output.
    expect(fs.existsSync(deploy)).toBe(false)
    expect(fs.existsSync(path.join(dir, 'log'))).toBe(false)
    const all = stdout.join('') + stderr.join('')
    for (const secret of [ANSWERS.TELEGRAM_BOT_TOKEN, ANSWERS.STRIPE_API_KEY]) expect(all).not.toContain(secret)
    expect(all).toContain('INFO: Skipping nginx and certbot: polling mode has no public ingress')
    expect(all).toContain(`INFO: [dry-run] would record v1.2.0 as deployed: an event in ${path.join(dir, 'log/deployments.log')}, the current artifact in ${deploy}/artifacts.json`)
  })

  it('webhook mode: certbot, ports 80 and 443, nginx\'s profile; --staging passes through', async () => {
    expect(await dryRun(['--staging'], { ...ANSWERS, TELEGRAM_WEBHOOK_URL: 'https://bot.example.com/webhook', CERTBOT_EMAIL: 'ops@example.com' })).toBe('configured')
    const lines = recorded.map((c) => c.argv.join(' '))
    expect(lines).toContain('apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold certbot')
    expect(lines.filter((l) => l.startsWith('ufw allow'))).toEqual(['ufw allow 22/tcp', 'ufw allow 80/tcp', 'ufw allow 443/tcp'])
    const certbot = recorded.find((c) => c.argv[0] === 'certbot')!.argv
    expect(certbot.slice(0, 10)).toEqual(['certbot', 'certonly', '--standalone', '--non-interactive', '--agree-tos', '--email', 'ops@example.com', '--staging', '--domain', 'bot.example.com'])
    expect(certbot.slice(10, 12)).toEqual(['--pre-hook', expect.stringMatching(/^docker compose --project-name toogoodtogo .* --profile webhook stop nginx$/)])
    expect(certbot.slice(12)).toEqual(['--post-hook', expect.stringMatching(/^docker compose --project-name toogoodtogo .* --profile webhook start nginx$/)])
    expect(lines.find((l) => / pull /.test(l))).toMatch(/--profile webhook pull bot redis nginx$/)
  })

  it('without a terminal, missing answers stop it before any change, naming them', async () => {
    await expect(dryRun([], { APP_REPO_URL: 'https://git.example.com/team/bot.git', TELEGRAM_BOT_TOKEN: '123456:plan_token' })).rejects.toThrow(
      'Missing STRIPE_API_KEY, BOT_IMAGE: set them in the environment or in --env-file FILE, or run on a terminal to be asked. Nothing was changed',
    )
    expect(recorded).toEqual([])
  })

  it('ssh hardening: refused before any change while root (and the sudo user) has no authorized key; the opt-outs skip both steps', async () => {
    fs.writeFileSync(path.join(dir, 'root/.ssh/authorized_keys'), '# no key yet\n')
    await expect(dryRun([], ANSWERS)).rejects.toThrow('SSH hardening turns password login off, but root has no key in ~/.ssh/authorized_keys: that would lock you out. Add your public key (ssh-copy-id root@this-host), or keep password login with --no-ssh-hardening (SETUP_SSH_HARDENING=false). Nothing was changed')
    expect(recorded).toEqual([])
    expect(await dryRun(['--no-ssh-hardening', '--no-unattended-upgrades'], ANSWERS)).toBe('configured')
    expect(recorded.map((c) => c.argv.join(' ')).filter((l) => /ssh\.service|unattended/.test(l))).toEqual([])
    expect(stdout.join('')).toContain('INFO: SSH: left as it is (--no-ssh-hardening')
    recorded.length = 0
    expect(await dryRun([], { ...ANSWERS, SETUP_SSH_HARDENING: 'false', SETUP_UNATTENDED_UPGRADES: 'false' })).toBe('configured')
    expect(recorded.map((c) => c.argv.join(' ')).filter((l) => /ssh\.service|unattended/.test(l))).toEqual([])
  })

  it('a finished host (marker present): already configured (exit 2), nothing run', async () => {
    fs.mkdirSync(path.join(dir, 'opt/toogoodtogo'), { recursive: true })
    fs.writeFileSync(path.join(dir, 'opt/toogoodtogo/.setup-complete'), '{"completed_at":"2026-01-01T00:00:00Z"}\n')
    expect(await dryRun([], ANSWERS)).toBe('already_configured')
    expect(stdout.join('')).toContain('INFO: Existing configuration found')
    expect(recorded).toEqual([])
  })
})

describe('setup-droplet --dry-run: the rough edges of issue 11', () => {
  const README_ONE_LINER = { APP_REPO_URL: 'git@github.com:team/bot.git', BOT_IMAGE: 'ghcr.io/team/bot' }
  const SECRETS = { TELEGRAM_BOT_TOKEN: '123456:plan_token', STRIPE_API_KEY: 'sk_test_plan' }

  it("the README's one-liner: no APP_VERSION (the newest tag is unknown before the clone), an ssh URL: a deploy key for the deploy user", async () => {
    expect(await dryRun([], { ...README_ONE_LINER, ...SECRETS })).toBe('configured')
    expect(stderr.join(''), stderr.join('')).not.toContain('ERROR')
    const deploy = path.join(dir, 'opt/toogoodtogo')
    const asDeploy = ['setpriv', '--reuid=deploy', '--regid=deploy', '--init-groups', '--']
    const ssh = 'ssh -i /home/deploy/.ssh/id_ed25519 -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new -o BatchMode=yes'
    const argvs = recorded.map((c) => c.argv)
    const clone = argvs.findIndex((a) => a.includes('clone'))
    expect(handOvers()).toContain('[dry-run] install -d -m 0700 -o deploy -g deploy /home/deploy/.ssh')
    expect(argvs.slice(clone - 1, clone + 2)).toEqual([
      [...asDeploy, 'ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', expect.stringMatching(/^deploy@.* toogoodtogo deploy key$/), '-f', '/home/deploy/.ssh/id_ed25519'],
      // The clone keeps the key in its own config: deploy's later fetch uses it with nothing set.
      [...asDeploy, 'git', 'clone', '--quiet', '--no-checkout', '--config', `core.sshCommand=${ssh}`, 'git@github.com:team/bot.git', `${deploy}/app.partial`],
      [...asDeploy, 'git', '-C', `${deploy}/app.partial`, 'checkout', '--detach', '--force', '--quiet', 'NEWEST_RELEASE_TAG'],
    ])
    expect(recorded[clone]!.env).toMatchObject({ GIT_TERMINAL_PROMPT: '0', GIT_SSH_COMMAND: ssh, HOME: '/home/deploy' })
    expect(stdout.join('')).toContain('INFO: [dry-run] would check that deploy can read git@github.com:team/bot.git with /home/deploy/.ssh/id_ed25519')
    expect(fs.existsSync(path.join(dir, 'log'))).toBe(false)
  })

  it('MIGRATE_COMMAND from the answers is the first migration', async () => {
    const answers = path.join(dir, 'answers.env')
    fs.writeFileSync(answers, 'MIGRATE_COMMAND=python3 -m app.migrate --all\n')
    expect(await dryRun(['--env-file', answers], ANSWERS)).toBe('configured')
    const migrate = recorded.find((c) => c.argv.includes('run'))!.argv
    expect(migrate.slice(migrate.indexOf('run'))).toEqual(['run', '--rm', '-T', 'bot', 'python3', '-m', 'app.migrate', '--all'])
  })

  it("'--' before the options (as scripts/run.sh passes them) is taken off; a missing --env-file is the script's own error", async () => {
    const answers = path.join(dir, 'answers.env')
    fs.writeFileSync(answers, Object.entries(ANSWERS).map(([k, v]) => `${k}=${v}`).join('\n') + '\n')
    expect(await dryRun(['--env-file', answers], {})).toBe('configured')
    expect(stderr.join('')).toBe('')
    expect(recorded.some((c) => c.argv.includes('clone'))).toBe(true)

    recorded.length = 0
    await expect(dryRun(['--env-file', path.join(dir, 'missing.env')], {})).rejects.toThrow(`--env-file ${path.join(dir, 'missing.env')}: no such file`)
    expect(recorded).toEqual([])
  })

  it('a re-run keeps .env.production, says so, and names (never shows) the answers that differ; APP_VERSION is the release it starts', async () => {
    const deploy = path.join(dir, 'opt/toogoodtogo')
    fs.mkdirSync(deploy, { recursive: true })
    const kept = { ...ANSWERS, APP_VERSION: 'v1.0.0', POSTGRES_PASSWORD: 'KeptPassword1234', DATABASE_URL: 'postgresql://toogoodtogo:KeptPassword1234@postgres:5432/toogoodtogo', TELEGRAM_WEBHOOK_URL: '', TELEGRAM_WEBHOOK_SECRET: 'kept_secret' }
    const template = fs.readFileSync(path.join(TOOLKIT_DIR, 'deployment/.env.production.template'), 'utf8')
    fs.writeFileSync(path.join(deploy, '.env.production'), renderEnvFile(template, kept, '# kept'), { mode: 0o600 })
    // setup completed here once (the marker since removed to run it again)
    fs.writeFileSync(path.join(deploy, 'setup_state.json'), '{"setup_completed_at": "2026-12-01T10:00:00Z"}\n')
    const before = fs.readFileSync(path.join(deploy, '.env.production'), 'utf8')
    expect(await dryRun([], { ...ANSWERS, STRIPE_API_KEY: 'sk_test_fixed', BOT_IMAGE: 'registry.example.com/team/bot2' })).toBe('configured')
    const out = stdout.join('') + stderr.join('')
    expect(out).toContain(`INFO: Keeping ${deploy}/.env.production from an earlier run: it is not rewritten from this run's answers`)
    expect(stderr.join('')).toContain(`WARN: Answers that differ from the kept ${deploy}/.env.production and are NOT applied: BOT_IMAGE, STRIPE_API_KEY. To change them, edit`)
    expect(out).toContain(`INFO: Setting APP_VERSION=v1.2.0 in ${deploy}/.env.production (was v1.0.0)`)
    for (const value of ['sk_test_fixed', 'sk_test_plan', 'KeptPassword1234']) expect(out).not.toContain(value)
    // A dry run: the file is as it was.
    expect(fs.readFileSync(path.join(deploy, '.env.production'), 'utf8')).toBe(before)
  })

  it('a re-run after a failed first run applies the fixed answers, keeping the database credentials once its volume holds a database', async () => {
    const deploy = path.join(dir, 'opt/toogoodtogo')
    fs.mkdirSync(deploy, { recursive: true })
    const earlier = { ...ANSWERS, BOT_IMAGE: 'registry.example.com/team/bto', POSTGRES_PASSWORD: 'EarlierPassword1234', DATABASE_URL: 'postgresql://toogoodtogo:EarlierPassword1234@postgres:5432/toogoodtogo', TELEGRAM_WEBHOOK_URL: '', TELEGRAM_WEBHOOK_SECRET: 'earlier_secret' }
    const template = fs.readFileSync(path.join(TOOLKIT_DIR, 'deployment/.env.production.template'), 'utf8')
    fs.writeFileSync(path.join(deploy, '.env.production'), renderEnvFile(template, earlier, '# the failed run'), { mode: 0o600 })
    // no volume yet (the failed run stopped before postgres started): nothing is kept
    expect(await dryRun([], ANSWERS)).toBe('configured')
    let out = stdout.join('') + stderr.join('')
    expect(out).toContain(`INFO: Applying this run's answers to ${deploy}/.env.production (written by an earlier run that did not complete)\n`)
    expect(out).not.toContain('Keeping')
    expect(stdout.map((l) => l.trim())).toContain(`[dry-run] write ${deploy}/.env.production (mode 600)`)

    // the volume holds the database the earlier password initialised: that password stays, and a different one given is named
    stdout.length = 0
    stderr.length = 0
    answer = (argv) => (argv.join(' ') === 'docker volume inspect toogoodtogo_postgres_data' ? { exitCode: 0, stdout: '[]', stderr: '' } : freshDebian12(argv))
    expect(await dryRun([], { ...ANSWERS, POSTGRES_PASSWORD: 'AnotherPassword9876' })).toBe('configured')
    out = stdout.join('') + stderr.join('')
    expect(out).toContain(`; kept from it: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, DATABASE_URL (the database in volume toogoodtogo_postgres_data was initialised with them)`)
    expect(stderr.join('')).toContain('WARN: Answers NOT applied: POSTGRES_PASSWORD: the database was initialised with the earlier values')
    for (const value of ['EarlierPassword1234', 'AnotherPassword9876']) expect(out).not.toContain(value)
  })

  it('off-site answers: an age key pair for the deploy user (identity 600, never shown or logged in a plan), the secrets never in the output', async () => {
    const offsite = {
      OFFSITE_S3_ENDPOINT: 'https://fra1.digitaloceanspaces.com', OFFSITE_S3_BUCKET: 'ttg-backups', OFFSITE_S3_ACCESS_KEY_ID: 'DO00PLANKEYID', OFFSITE_S3_SECRET_ACCESS_KEY: 'plan/Secret+Access-Key',
    }
    expect(await dryRun([], { ...ANSWERS, ...offsite }), stderr.join('')).toBe('configured')
    const deploy = path.join(dir, 'opt/toogoodtogo')
    const identity = `${deploy}/backup-age-identity.txt`
    // The identity goes to the deploy user just before .env.production, which names it.
    const owned = handOvers()
    const at = owned.indexOf(`[dry-run] chown deploy:deploy ${identity}; chmod 0600 ${identity}`)
    expect(at).toBeGreaterThan(0)
    expect(owned[at + 1]).toEqual(`[dry-run] chown deploy:deploy ${deploy}/.env.production; chmod 0600 ${deploy}/.env.production`)
    expect(stdout.filter((l) => l.startsWith(`[dry-run] write ${deploy}`)).map((l) => l.trim()).slice(0, 2)).toEqual([
      `[dry-run] write ${identity} (mode 600)`,
      `[dry-run] write ${deploy}/.env.production (mode 600)`,
    ])
    const all = stdout.join('') + stderr.join('')
    expect(all).toMatch(/INFO: Generated the age key pair for off-site copies: public key age1[0-9a-z]{58}, identity /)
    expect(all).not.toContain('AGE-SECRET-KEY-')
    for (const secret of [offsite.OFFSITE_S3_ACCESS_KEY_ID, offsite.OFFSITE_S3_SECRET_ACCESS_KEY]) expect(all).not.toContain(secret)
    expect(fs.existsSync(identity)).toBe(false)
  })

  it('incomplete off-site answers without a terminal stop it before any change, naming the variable', async () => {
    await expect(dryRun([], { ...ANSWERS, OFFSITE_S3_BUCKET: 'ttg-backups', OFFSITE_S3_ACCESS_KEY_ID: 'DO00PLANKEYID', OFFSITE_S3_SECRET_ACCESS_KEY: 'plan-secret' })).rejects.toThrow(
      'Invalid OFFSITE_S3_ENDPOINT: must be set when OFFSITE_S3_BUCKET is set',
    )
    expect(recorded).toEqual([])
  })
})

describe('setup-droplet --monitoring --dry-run on a fresh Debian 12 droplet', () => {
  /** A fresh host as above, where dpkg knows no node_exporter and no override yet. */
  function freshWithDpkg(argv: string[]): RunResult {
    if (argv[0] === 'dpkg-query' || argv[0] === 'dpkg-statoverride') return { exitCode: 1, stdout: '', stderr: '' }
    return freshDebian12(argv)
  }
  const WEBHOOK = 'https://hooks.example.com/services/T000/B000/plan-secret-path'

  it('node_exporter on the host, its textfile directory for the deploy user, the ufw rule, the webhook URL file, the images; every compose command with the monitoring file', async () => {
    answer = freshWithDpkg
    expect(await dryRun(['--monitoring'], { ...ANSWERS, ALERT_WEBHOOK_URL: WEBHOOK })).toBe('configured')
    const deploy = path.join(dir, 'opt/toogoodtogo')
    const keep = ['-o', 'Dpkg::Options::=--force-confdef', '-o', 'Dpkg::Options::=--force-confold']
    const base = ['docker', 'compose', '--project-name', 'toogoodtogo', '--file', expect.stringMatching(/\/deployment\/docker-compose\.prod\.yml$/), '--file', path.join(TOOLKIT_DIR, 'deployment/monitoring/docker-compose.monitoring.yml'), '--env-file', `${deploy}/.env.production`, '--profile', 'monitoring']
    const argv = recorded.map((c) => c.argv)
    const from = argv.findIndex((a) => a.includes('prometheus-node-exporter'))
    expect(argv.slice(from - 1, from + 5)).toEqual([
      ['git', 'config', '--system', '--add', 'safe.directory', `${deploy}/app`],
      ['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...keep, 'prometheus-node-exporter'],
      ['dpkg-statoverride', '--update', '--add', 'root', 'deploy', '2775', '/var/lib/prometheus/node-exporter'],
      ['systemctl', 'enable', '--now', 'prometheus-node-exporter.service'],
      ['ufw', 'allow', 'from', '172.30.77.0/24', 'to', 'any', 'port', '9100', 'proto', 'tcp'],
      [...base, 'pull', 'prometheus', 'alertmanager', 'postgres-exporter', 'redis-exporter'],
    ])
    // The stack starts with the monitoring services (the same files and profile as deploy's `up --remove-orphans`).
    expect(argv).toContainEqual([...base, 'up', '--detach', '--remove-orphans'])
    expect(argv.at(-1)).toEqual(['systemctl', 'enable', '--now', 'toogoodtogo-health-metrics.timer'])
    const writes = stdout.filter((l) => l.startsWith('[dry-run] write')).map((l) => l.trim())
    expect(writes).toContain(`[dry-run] write ${deploy}/monitoring-secrets/slack_webhook_url (mode 600)`)
    expect(handOvers()).toEqual(expect.arrayContaining([
      `[dry-run] install -d -m 0700 -o 65534 -g 65534 ${deploy}/monitoring-secrets`,
      `[dry-run] chown 65534:65534 ${deploy}/monitoring-secrets/slack_webhook_url; chmod 0600 ${deploy}/monitoring-secrets/slack_webhook_url`,
    ]))
    expect(writes).toContain('[dry-run] write /etc/systemd/system/toogoodtogo-health-metrics.timer (mode 644)')
    const all = stdout.join('') + stderr.join('')
    expect(all).toContain(`INFO: Writing Alertmanager's webhook URL (ALERT_WEBHOOK_URL) to ${deploy}/monitoring-secrets/slack_webhook_url (mode 600`)
    expect(all).not.toContain('plan-secret-path')
  })

  it('without a webhook URL and no terminal: stopped before any change, saying where the URL goes', async () => {
    answer = freshWithDpkg
    await expect(dryRun(['--monitoring'], ANSWERS)).rejects.toThrow(/^Monitoring: monitoring needs the URL Alertmanager posts alerts to .*set ALERT_WEBHOOK_URL .*monitoring-secrets\/slack_webhook_url, never to \.env\.production.*Nothing was changed$/)
    expect(recorded).toEqual([])
  })

  it('off (the default): no node_exporter, no rule, no monitoring file in any compose command', async () => {
    expect(await dryRun([], ANSWERS)).toBe('configured')
    const lines = recorded.map((c) => c.argv.join(' '))
    expect(lines.filter((l) => /prometheus|9100|monitoring|health-metrics/.test(l))).toEqual([])
    expect(stdout.join('')).toContain('INFO: Monitoring: off;')
  })
})
