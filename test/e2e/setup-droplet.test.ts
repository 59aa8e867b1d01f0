import { spawnSync } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseEnvFile } from '../../lib/core/env-file.ts'
import { createDroplet, ensureDropletImage, freePort, gitHostOverSsh, hostSnapshot, removeStack, runOnPty, stackContainers, type Droplet, type GitHost } from '../support/droplet.ts'
import { LOG_LINE } from '../support/scripts.ts'
import { stopAfterFirstFailure } from '../support/sequence.ts'
import { bedEnv } from '../support/stack.ts'
import { startBotApi, type BotApiStandIn } from '../support/bot-api.ts'
import { bridgeGateway } from '../support/pitr-stack.ts'

// setup-droplet.sh on "fresh droplets": systemd-booted Debian 12 containers using the bed's Docker
// engine through the host's socket (test/support/droplet.ts). Each describe block boots its own.
const bed = bedEnv()
const TOKEN = '123456:E2E-droplet_token'
const STRIPE = 'sk_test_droplet_key'
const LOG_FILE = '/var/log/toogoodtogo/deployment.log'
const AUDIT_LOG = '/var/log/toogoodtogo/deployments.log'
const BACKUP_DIR = '/opt/backups/postgres'
const UNITS = ['toogoodtogo.service', 'toogoodtogo-healthcheck.service', 'toogoodtogo-backup.timer', 'toogoodtogo-restore-drill.timer']
const CONTRACT_LINES = [
  'Starting droplet setup', 'Checking existing configuration', 'No existing configuration found', 'Updating system packages',
  'Installing Docker', 'Configuring firewall', 'Creating application directories', 'Cloning repository',
  'Configuring environment variables', 'Creating systemd service', 'Starting services', 'Running health checks',
  'All services healthy', 'Setup complete - system ready for production',
]
// The images the bed's registry holds; everything else is setup's own answer or default.
const IMAGES = { BOT_IMAGE: bed.BOT_IMAGE!, APP_VERSION: 'v1.0.0', POSTGRES_IMAGE: bed.POSTGRES_IMAGE!, REDIS_IMAGE: bed.REDIS_IMAGE!, NGINX_IMAGE: bed.NGINX_IMAGE! }

let image: string
beforeAll(() => {
  image = ensureDropletImage()
})


async function writeAnswers(d: Droplet, answers: Record<string, string>): Promise<string> {
  const file = `${d.root}/answers.env`
  const r = await d.sh(`umask 077; cat > ${file} <<'EOF'\n${Object.entries(answers).map(([k, v]) => `${k}=${v}`).join('\n')}\nEOF`)
  expect(r.code).toBe(0)
  return file
}

function expectInOrder(text: string, lines: string[]): void {
  let at = 0
  for (const line of lines) {
    const found = text.indexOf(`: ${line}`, at)
    expect(found, `"${line}" after position ${at} in:\n${text}`).toBeGreaterThanOrEqual(0)
    at = found
  }
}

async function healthCheck(d: Droplet, args: string[] = [], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return d.exec([`${d.toolkitDir}/scripts/health-check.sh`, ...args], { user: 'deploy', env: { DEPLOY_DIR: d.deployDir, COMPOSE_PROJECT_NAME: d.name, NO_COLOR: '1', ...env } })
}

async function backupIndex(d: Droplet): Promise<{ backups: { backup_type: string; backup_id: string; last_drill: { outcome: string } | null }[] }> {
  return JSON.parse(await d.readFile(`${BACKUP_DIR}/backup_index.json`))
}

describe("a fresh droplet, non-interactive (polling mode): the droplet's real flow", () => {
  let d: Droplet
  let answers: string
  let repo: GitHost
  // As an operator runs them on the droplet: the default paths, the deploy directory named.
  const scriptEnv = () => ({ DEPLOY_DIR: d.deployDir, NO_COLOR: '1' })
  const script = (name: string) => `${d.toolkitDir}/scripts/${name}.sh`
  beforeAll(async () => {
    d = await createDroplet(image, 'a')
    // The README's case: the application repository over SSH (git@host:...), readable only with a key.
    repo = await gitHostOverSsh(d, bed.APP_REPO!)
    d.env.APP_REPO_URL = repo.url
    // Point-in-time recovery on. repo1 under the deploy directory: the droplet's postgres runs on
    // the bed's engine, which resolves bind mounts on the host, where only that path is shared.
    answers = await writeAnswers(d, { TELEGRAM_BOT_TOKEN: TOKEN, STRIPE_API_KEY: STRIPE, ...IMAGES, PITR_ENABLED: 'true', PITR_REPO_DIR: `${d.deployDir}/pgbackrest` })
  })
  afterAll(async () => d?.destroy())
  stopAfterFirstFailure()

  it('1. setup-droplet.sh --env-file --yes: a deploy key for the deploy user, refused until added (exit 1, what to do); the re-run completes: marker, units, env file 600, ufw, healthy', async () => {
    const refused = await d.setup(['--yes', '--env-file', answers])
    expect(refused.code, refused.stdout + refused.stderr).toBe(1)
    expect(refused.stdout).toContain('INFO: Creating an SSH deploy key for deploy: /home/deploy/.ssh/id_ed25519')
    const publicKey = /INFO: Deploy key: (ssh-ed25519 \S+ .*)$/m.exec(refused.stdout)?.[1]
    expect(publicKey, refused.stdout).toMatch(/^ssh-ed25519 \S+ deploy@ttg-droplet toogoodtogo deploy key$/)
    expect(refused.stdout).toMatch(/INFO: Add this public key to localhost as a read-only deploy key of the repository/)
    expect(refused.stderr).toMatch(/WARN: deploy cannot read git@localhost:\/srv\/git\/bot\.git yet: .*Permission denied \(publickey/)
    expect(refused.stderr).toMatch(/ERROR: The deploy user deploy cannot read git@localhost:\/srv\/git\/bot\.git: add the public key above \(\/home\/deploy\/\.ssh\/id_ed25519\.pub on this host\) to the repository as a read-only deploy key, then run setup-droplet again with the same settings \(sudo \S+\/scripts\/setup-droplet\.sh --yes --env-file \S+\); it continues from here/)
    expect(refused.stderr).toMatch(/ERROR: Setup failed at: Cloning repository/)
    const key = await d.exec(['stat', '-c', '%a %U', '/home/deploy/.ssh', '/home/deploy/.ssh/id_ed25519'])
    expect(key.stdout.trim().split('\n')).toEqual(['700 deploy', '600 deploy'])
    // The host key was accepted on first use, for the deploy user (root's known_hosts is not involved).
    expect((await d.exec(['ssh-keygen', '-F', 'localhost', '-f', '/home/deploy/.ssh/known_hosts'])).code).toBe(0)
    expect((await d.exec(['test', '-e', `${d.deployDir}/app`])).code).not.toBe(0)

    await repo.authorize(publicKey!)
    const r = await d.setup(['--yes', '--env-file', answers])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expectInOrder(r.stdout, CONTRACT_LINES)
    expect(r.stdout).not.toContain('Creating an SSH deploy key')
    expect(r.stdout).toContain('INFO: deploy can read git@localhost:/srv/git/bot.git with its deploy key /home/deploy/.ssh/id_ed25519')
    expect(r.stdout).toContain('Skipping nginx and certbot: polling mode has no public ingress')
    expect(r.stdout).toContain('Docker 20.10')
    expect(r.stdout).toMatch(/already works; not installing it/)
    for (const line of (r.stdout + r.stderr).trim().split('\n')) expect(line).toMatch(LOG_LINE)

    const marker = JSON.parse(await d.readFile(`${d.deployDir}/.setup-complete`))
    expect(marker).toMatchObject({ mode: 'polling', app_version: 'v1.0.0', compose_project: d.name })

    // The clone is the deploy user's, and keeps the deploy key for deploy's own fetches.
    const sshCommand = await d.exec(['git', '-C', `${d.deployDir}/app`, 'config', '--get', 'core.sshCommand'], { user: 'deploy' })
    expect(sshCommand.stdout.trim()).toBe('ssh -i /home/deploy/.ssh/id_ed25519 -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new -o BatchMode=yes')
    expect((await d.exec(['stat', '-c', '%U', `${d.deployDir}/app/.git/index`])).stdout.trim()).toBe('deploy')

    const enabled = await d.exec(['systemctl', 'is-enabled', ...UNITS])
    expect(enabled.stdout.trim().split('\n')).toEqual(['enabled', 'enabled', 'enabled', 'enabled'])
    expect((await d.exec(['systemctl', 'is-active', 'toogoodtogo.service'])).stdout.trim()).toBe('active')
    const timers = await d.exec(['systemctl', 'list-timers', '--all', '--no-pager'])
    expect(timers.stdout).toMatch(/03:00:00 UTC.*toogoodtogo-backup\.timer\s+toogoodtogo-backup\.service/)
    expect(timers.stdout).toContain('toogoodtogo-restore-drill.timer')
    const timer = await d.exec(['systemctl', 'show', '--property=TimersCalendar,Persistent', 'toogoodtogo-backup.timer'])
    expect(timer.stdout).toContain('OnCalendar=*-*-* 03:00:00 UTC')
    expect(timer.stdout).toContain('Persistent=yes')
    const unit = await d.readFile('/etc/systemd/system/toogoodtogo-backup.service')
    expect(unit).toContain(`ExecStart=${d.toolkitDir}/node_modules/.bin/tsx ${d.toolkitDir}/scripts/backup.ts scheduled`)

    // Every unit as systemd loads it: no error, and not a single ignored line.
    const verify = await d.sh('systemd-analyze verify --man=no /etc/systemd/system/toogoodtogo* 2>&1')
    expect(verify.code, verify.stdout).toBe(0)
    expect(verify.stdout).not.toMatch(/toogoodtogo/)
    expect((await d.exec(['logrotate', '--debug', '/etc/logrotate.d/toogoodtogo'])).code).toBe(0)

    const modes = await d.exec(['stat', '-c', '%a %U %n', `${d.deployDir}/.env.production`, BACKUP_DIR, '/var/log/toogoodtogo', LOG_FILE, d.deployDir])
    expect(modes.stdout.trim().split('\n')).toEqual([
      `600 deploy ${d.deployDir}/.env.production`, `700 deploy ${BACKUP_DIR}`, '750 deploy /var/log/toogoodtogo', `640 deploy ${LOG_FILE}`, `750 deploy ${d.deployDir}`,
    ])
    expect((await d.exec(['id', '-nG', 'deploy'])).stdout.split(/\s+/)).toContain('docker')

    const env = parseEnvFile(await d.readFile(`${d.deployDir}/.env.production`))
    expect(env).toMatchObject({ TELEGRAM_BOT_TOKEN: TOKEN, STRIPE_API_KEY: STRIPE, TELEGRAM_WEBHOOK_URL: '', APP_VERSION: 'v1.0.0', BOT_IMAGE: bed.BOT_IMAGE })
    expect(env.POSTGRES_PASSWORD).toMatch(/^[A-Za-z0-9]{32}$/)
    // The bot's own role with a password of its own (issue 21); the containers' env_files are the deploy user's, 600.
    expect(env.DATABASE_URL).toMatch(/^postgresql:\/\/bot:[A-Za-z0-9]{32}@postgres:5432\/toogoodtogo$/)
    expect(env.DATABASE_URL).not.toContain(env.POSTGRES_PASSWORD)
    expect((await d.exec(['stat', '-c', '%a %U', `${d.deployDir}/.env.bot`, `${d.deployDir}/.env.postgres`])).stdout.trim().split('\n')).toEqual(['600 deploy', '600 deploy'])
    expect(JSON.stringify(env)).not.toContain('CHANGE_ME')

    // The release setup started is the first deployment (item 5): an event and the current artifact, the deploy user's.
    expect(r.stdout).toMatch(/INFO: Recorded v1\.0\.0 \([0-9a-f]{12}\) as the current deployment: the first deploy can roll back to it/)
    expect(r.stdout).toContain(`INFO: Point-in-time recovery: on; WAL archived to ${d.deployDir}/pgbackrest`)
    expect(r.stdout).toMatch(/INFO: Physical backup complete in [\d.]+s: \S+F \(full, repo1, /)
    const state = await artifacts(d)
    expect(state.previous).toBeNull()
    expect(state.current).toMatchObject({ artifact_id: 'v1.0.0', git_tag: 'v1.0.0', git_commit_sha: expect.stringMatching(/^[0-9a-f]{40}$/), docker_image_uri: `${bed.BOT_IMAGE}:v1.0.0`, docker_image_digest: expect.stringMatching(/^sha256:[0-9a-f]{64}$/), deployed: true, rollback_from: null, schema_revision: '0001' })
    const events = await auditEvents(d)
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({ event_type: 'deploy', status: 'success', triggered_by: 'manual', artifact_id: 'v1.0.0', previous_artifact_id: null, health_check_passed: true, schema_revision_after: '0001', error_message: null })
    const owners = await d.exec(['stat', '-c', '%U %a %n', `${d.deployDir}/artifacts.json`, AUDIT_LOG, `${d.deployDir}/.setup-complete`])
    expect(owners.stdout.trim().split('\n')).toEqual([`deploy 644 ${d.deployDir}/artifacts.json`, `deploy 640 ${AUDIT_LOG}`, `deploy 644 ${d.deployDir}/.setup-complete`])

    const ufw = await d.exec(['ufw', 'status', 'verbose'])
    expect(ufw.stdout).toContain('Status: active')
    expect(ufw.stdout).toContain('Default: deny (incoming)')
    expect(ufw.stdout).toMatch(/^22\/tcp\s+ALLOW IN\s+Anywhere/m)
    expect(ufw.stdout).not.toMatch(/\b(80|443)\/tcp/)
    // Docker's published ports bypass ufw: the polling stack publishes none.
    const ports = spawnSync('docker', ['ps', '--filter', `label=com.docker.compose.project=${d.name}`, '--format', '{{.Names}} {{.Ports}}'], { encoding: 'utf8' }).stdout
    expect(ports.trim().split('\n')).toHaveLength(3)
    expect(ports).not.toContain('->')

    const health = await healthCheck(d)
    expect(health.code, health.stdout + health.stderr).toBe(0)
    expect(health.stdout).toContain('All services healthy')

    const log = await d.readFile(LOG_FILE)
    for (const secret of [TOKEN, STRIPE, env.POSTGRES_PASSWORD!, env.TELEGRAM_WEBHOOK_SECRET!]) expect(log).not.toContain(secret)
    expect(log).toContain('INFO: Setup complete - system ready for production')
  })

  it('2. a second run exits 2 and changes nothing (files, modes, units, containers)', async () => {
    const before = await hostSnapshot(d)
    // What is compared really covers the host's state.
    expect(before).toMatch(/^[0-9a-f]{64}  .*\/\.env\.production$/m)
    expect(before).toMatch(/^[0-9a-f]{64}  \/etc\/systemd\/system\/toogoodtogo\.service$/m)
    expect(before).toMatch(/^600 deploy:deploy .*\/\.env\.production$/m)
    expect(before).toContain('ActiveState=active')
    const containers = stackContainers(d)
    const r = await d.setup(['--yes', '--env-file', answers])
    expect(r.code, r.stdout + r.stderr).toBe(2)
    expect(r.stdout).toMatch(/INFO: Existing configuration found: .*\.setup-complete \(setup completed .*\); nothing was changed/)
    expect(r.stdout).not.toContain('Updating system packages')
    expect(await hostSnapshot(d)).toBe(before)
    expect(stackContainers(d)).toBe(containers)
  })

  it('3. deploy.sh v1.1.0 as the deploy user, then rollback.sh as root back to the version setup started; every file stays the deploy user\'s', async () => {
    // The deploy user fetches the new tag over SSH with its own key (the clone's core.sshCommand).
    const deployed = await d.exec([script('deploy'), 'v1.1.0', '--yes'], { user: 'deploy', env: scriptEnv() })
    expect(deployed.code, deployed.stdout + deployed.stderr).toBe(0)
    expect(deployed.stdout).toMatch(/Deployment successful: v1\.1\.0/)
    expect(await botVersion(d)).toBe('v1.1.0')
    expect((await artifacts(d)).current?.artifact_id).toBe('v1.1.0')

    // root, as `sudo ./rollback.sh` would: the script works on the deploy user's behalf. Its target
    // is the version setup recorded: the first deploy can be rolled back.
    const rolledBack = await d.exec([script('rollback'), '--yes'], { env: scriptEnv() })
    expect(rolledBack.code, rolledBack.stdout + rolledBack.stderr).toBe(0)
    expect(await botVersion(d)).toBe('v1.0.0')
    const state = await artifacts(d)
    expect(state.current).toMatchObject({ artifact_id: 'v1.0.0', rollback_from: 'v1.1.0' })
    expect(parseEnvFile(await d.readFile(`${d.deployDir}/.env.production`)).APP_VERSION).toBe('v1.0.0')
    const events = await auditEvents(d)
    expect(events.map((e) => `${e.event_type} ${e.artifact_id} ${e.status}`)).toEqual(['deploy v1.0.0 success', 'deploy v1.1.0 success', 'rollback v1.0.0 success'])

    await expectAllTheDeployUsers(d)
  })

  it('4. logrotate rotates the log file and never the audit log (deployments.log)', async () => {
    const audit = await d.exec(['stat', '-c', '%i %s %Y', AUDIT_LOG])
    const auditHash = await d.exec(['sha256sum', AUDIT_LOG])
    const debug = await d.sh('logrotate --debug /etc/logrotate.d/toogoodtogo 2>&1')
    expect(debug.code, debug.stdout).toBe(0)
    expect(debug.stdout).toContain(LOG_FILE)
    expect(debug.stdout).not.toContain('deployments.log')
    const forced = await d.sh('logrotate --force --state /tmp/ttg-logrotate.state /etc/logrotate.d/toogoodtogo 2>&1')
    expect(forced.code, forced.stdout).toBe(0)
    const files = await d.exec(['ls', '-1', '/var/log/toogoodtogo'])
    expect(files.stdout.trim().split('\n').sort()).toEqual(['deployment.log', 'deployment.log.1', 'deployments.log'])
    expect((await d.exec(['stat', '-c', '%a %U %s', LOG_FILE])).stdout.trim()).toBe('640 deploy 0')
    // Not moved, not truncated, not rewritten: every rollback target is still there.
    expect((await d.exec(['stat', '-c', '%i %s %Y', AUDIT_LOG])).stdout).toBe(audit.stdout)
    expect((await d.exec(['sha256sum', AUDIT_LOG])).stdout).toBe(auditHash.stdout)
    expect(await auditEvents(d)).toHaveLength(3)
  })

  it('5. systemctl start of the backup service (User=deploy) indexes a scheduled backup after root\'s rollback; the drill service records its outcome', async () => {
    const backup = await d.exec(['systemctl', 'start', 'toogoodtogo-backup.service'])
    expect(backup.code, backup.stderr + (await d.exec(['journalctl', '--no-pager', '-u', 'toogoodtogo-backup.service'])).stdout).toBe(0)
    const index = await backupIndex(d)
    const scheduled = index.backups.filter((b) => b.backup_type === 'scheduled')
    expect(scheduled).toHaveLength(1)
    const owner = await d.exec(['stat', '-c', '%U %a', `${BACKUP_DIR}/${scheduled[0]!.backup_id}.sql.gz`, `${BACKUP_DIR}/backup_index.json`])
    expect(owner.stdout.trim().split('\n')).toEqual(['deploy 600', 'deploy 600'])

    const drill = await d.exec(['systemctl', 'start', 'toogoodtogo-restore-drill.service'])
    expect(drill.code, drill.stderr).toBe(0)
    const after = await backupIndex(d)
    expect(after.backups.find((b) => b.backup_id === scheduled[0]!.backup_id)?.last_drill?.outcome).toBe('passed')
    const journal = await d.exec(['journalctl', '--no-pager', '-u', 'toogoodtogo-restore-drill.service'])
    expect(journal.stdout).toContain(`Restore drill passed: ${scheduled[0]!.backup_id}`)
    // PITR is on here: the same run replays the WAL archive into a scratch volume
    expect(journal.stdout).toMatch(/Point-in-time drill passed in \d+s: /)
    // and the scheduled backup took a base backup after the dump (a differential: the full one is from setup)
    expect((await d.exec(['journalctl', '--no-pager', '-u', 'toogoodtogo-backup.service'])).stdout).toMatch(/Physical backup complete in [\d.]+s: \S+D \(diff, repo1, /)
    await expectAllTheDeployUsers(d)
  })

  it('6. after a reboot the stack is healthy again within 5 minutes, on the version deployed last, with no command typed', async () => {
    const before = stackContainers(d)
    const started = Date.now()
    await d.reboot()
    const health = await healthCheck(d, ['--wait', '300'])
    expect(health.code, health.stdout + health.stderr).toBe(0)
    expect(health.stdout).toContain('All services healthy')
    expect(Date.now() - started).toBeLessThan(300_000)
    // Really down and up again: the shutdown stopped the containers, the boot started them (the
    // stack unit, as the deploy user, reading .env.production), on the release deployed last.
    expect(stackContainers(d)).not.toBe(before)
    expect(stackContainers(d)).toMatch(/running/)
    expect(await botVersion(d)).toBe((await artifacts(d)).current?.artifact_id)
    expect((await d.exec(['systemctl', 'is-active', 'toogoodtogo.service', 'toogoodtogo-healthcheck.service'])).stdout.trim().split('\n')).toEqual(['active', 'active'])
    expect((await d.exec(['test', '-r', `${d.deployDir}/.env.production`], { user: 'deploy' })).code).toBe(0)
    const journal = await d.exec(['journalctl', '--no-pager', '-b', '-u', 'toogoodtogo-healthcheck.service'])
    expect(journal.stdout).toContain('All services healthy')
  })

  it('the host is hardened (issue 21): sshd by key only (checked, applied), unattended security upgrades on', async () => {
    expect(await d.readFile('/etc/ssh/sshd_config.d/01-toogoodtogo-hardening.conf')).toMatch(/^PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n$/m)
    const applied = await d.exec(['sshd', '-T'])
    expect(applied.stdout).toMatch(/^passwordauthentication no$/m)
    expect(applied.stdout).toMatch(/^kbdinteractiveauthentication no$/m)
    expect(applied.stdout).toMatch(/^permitrootlogin (prohibit-password|without-password)$/m)
    expect(await d.readFile('/etc/apt/apt.conf.d/20auto-upgrades')).toBe('APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n')
    expect((await d.exec(['dpkg-query', '--show', '--showformat=${Status}', 'unattended-upgrades'])).stdout).toBe('install ok installed')
  })

  it('root never follows a link the deploy user planted (issue 21): at the log file, the PITR repository, the monitoring secrets; each re-run (--monitoring, PITR on) exits 1 naming the link, its root-only target untouched', async () => {
    // The targets: root's, mode 600 and 700, which the deploy user can name but not read.
    expect((await d.sh("umask 077; printf 'root only\\n' > /root/ttg-target && mkdir /root/ttg-target-dir")).code).toBe(0)
    const targets = () => d.sh("stat -c '%a %U:%G %s %n' /root/ttg-target /root/ttg-target-dir && sha256sum /root/ttg-target && ls -A /root/ttg-target-dir")
    const before = (await targets()).stdout
    expect(before).toMatch(/^600 root:root 10 \/root\/ttg-target\n700 root:root /)
    const asDeploy = async (script: string) => {
      const r = await d.exec(['bash', '-c', script], { user: 'deploy' })
      expect(r.code, r.stderr).toBe(0)
    }
    const rerun = async (args: string[], link: string, failedAt: string) => {
      expect((await d.exec(['rm', '-f', `${d.deployDir}/.setup-complete`])).code).toBe(0)
      const r = await d.setup(['--yes', '--env-file', answers, ...args], args.includes('--monitoring') ? { ALERT_WEBHOOK_URL: 'https://hooks.example.com/services/e2e' } : {})
      expect(r.code, r.stdout + r.stderr).toBe(1)
      expect(r.stderr).toContain(`ERROR: Refusing to write ${link}: it is a symbolic link to /root/ttg-target`)
      expect(r.stderr).toContain(`Setup failed at: ${failedAt}`)
      expect((await targets()).stdout).toBe(before)
      return r
    }
    const pitrRepo = `${d.deployDir}/pgbackrest`

    // The log file: root's lines are not appended through it (a warning says so), nor is it chowned.
    await asDeploy(`mv ${LOG_FILE} ${LOG_FILE}.kept && ln -s /root/ttg-target ${LOG_FILE}`)
    const logged = await rerun(['--monitoring'], LOG_FILE, 'Creating application directories')
    expect(logged.stderr).toContain(`warning: cannot write log file ${LOG_FILE}: Refusing to write ${LOG_FILE}: it is a symbolic link to /root/ttg-target`)
    await asDeploy(`rm ${LOG_FILE} && mv ${LOG_FILE}.kept ${LOG_FILE}`)

    // PITR's repo1 (the server's uid owns it, in the deploy directory): never created or chowned through a link.
    await asDeploy(`mv ${pitrRepo} ${pitrRepo}.kept && ln -s /root/ttg-target-dir ${pitrRepo}`)
    await rerun([], pitrRepo, 'Starting services')
    await asDeploy(`rm ${pitrRepo} && mv ${pitrRepo}.kept ${pitrRepo}`)

    // Alertmanager's secrets directory (uid 65534's, in the deploy directory), with --monitoring.
    await asDeploy(`ln -s /root/ttg-target-dir ${d.deployDir}/monitoring-secrets`)
    await rerun(['--monitoring'], `${d.deployDir}/monitoring-secrets`, 'Configuring monitoring')
    expect((await d.exec(['stat', '-c', '%a %U', LOG_FILE])).stdout.trim()).toBe('640 deploy')
  })
})

function stackContainersOf(d: Droplet, service: string): Promise<string> {
  return Promise.resolve(spawnSync('docker', ['ps', '-q', '--filter', `label=com.docker.compose.project=${d.name}`, '--filter', `label=com.docker.compose.service=${service}`], { encoding: 'utf8' }).stdout.trim())
}

/**
 * Item 4's promise: whoever ran the scripts, everything under DEPLOY_DIR (but the toolkit checkout
 * root cloned), BACKUP_DIR and the log directory belongs to the deploy user and is readable by it.
 */
async function expectAllTheDeployUsers(d: Droplet): Promise<void> {
  const dirs = `"${d.deployDir}" "${BACKUP_DIR}" /var/log/toogoodtogo`
  // pgBackRest's repo1 belongs to the server's user inside the postgres image, by design.
  const prune = `\\( -path "${d.toolkitDir}" -prune -o -path "${d.deployDir}/pgbackrest" -prune \\)`
  const notOwned = await d.sh(`find ${dirs} ${prune} -o ! -user deploy -printf '%u:%g %m %p\\n'`)
  expect(notOwned.code, notOwned.stderr).toBe(0)
  expect(notOwned.stdout).toBe('')
  const unreadable = await d.exec(['bash', '-c', `find ${dirs} ${prune} -o ! -readable -print`], { user: 'deploy' })
  expect(unreadable.code, unreadable.stderr).toBe(0)
  expect(unreadable.stdout).toBe('')
}

async function artifacts(d: Droplet): Promise<{ current: { artifact_id: string } & Record<string, unknown> | null; previous: Record<string, unknown> | null }> {
  return JSON.parse(await d.readFile(`${d.deployDir}/artifacts.json`))
}

async function auditEvents(d: Droplet): Promise<{ event_type: string; artifact_id: string; status: string; event_id: string }[]> {
  const lines = (await d.readFile(AUDIT_LOG)).trim().split('\n').map((l) => JSON.parse(l) as { event_type: string; artifact_id: string; status: string; event_id: string })
  // An event's state is its last line.
  return [...new Map(lines.map((e) => [e.event_id, e])).values()]
}

async function botVersion(d: Droplet): Promise<string> {
  const waited = await healthCheck(d, ['--wait', '120'])
  expect(waited.code, waited.stdout + waited.stderr).toBe(0)
  const json = await healthCheck(d, ['bot', '--json'])
  return (JSON.parse(json.stdout) as { services: { bot: { version: string } } }).services.bot.version
}

describe('an interactive run on a terminal (webhook mode, self-signed certificate, an ssh repository)', () => {
  let d: Droplet
  let httpsPort: number
  let repo: GitHost
  // Telegram's Bot API, as the droplet reaches this machine: on the docker bridge's gateway.
  let api: BotApiStandIn
  const HOOK = 'https://bot.ttg-e2e.test/webhook'
  beforeAll(async () => {
    d = await createDroplet(image, 'b')
    httpsPort = await freePort()
    repo = await gitHostOverSsh(d, bed.APP_REPO!)
    d.env.APP_REPO_URL = repo.url
    api = await startBotApi(await bridgeGateway())
  })
  afterAll(async () => {
    await api?.close()
    await d?.destroy()
  })
  stopAfterFirstFailure()

  it('7. the deploy key is shown once and tried again after each Enter; a bad bot token is asked again; no secret appears in the terminal or the log', async () => {
    const password = 'InteractivePw0123456'
    const env = {
      ...IMAGES,
      // nginx publishes on the host's engine: loopback only, on ports free there.
      NGINX_HTTP_PORT: `127.0.0.1:${await freePort()}`,
      NGINX_HTTPS_PORT: `127.0.0.1:${httpsPort}`,
      LETSENCRYPT_DIR: `${d.deployDir}/letsencrypt`,
      CERTBOT_WEBROOT: `${d.deployDir}/certbot-webroot`,
      TELEGRAM_API_BASE: api.base,
    }
    const keyPrompt = /Press Enter once the deploy key is added to the repository, to try again \(Ctrl-C to stop\): /
    const r = await runOnPty(d.setupArgvWithTty(['--webhook', '--self-signed'], env), [
      { expect: /Type "yes" to continue: /, send: 'yes\r' },
      // Enter before the key is in the repository: refused again, asked again.
      { expect: keyPrompt, send: '\r' },
      { expect: /cannot read git@localhost:\/srv\/git\/bot\.git yet[\s\S]*Press Enter once the deploy key is added/, send: async (screen) => {
        await repo.authorize(/Deploy key: (ssh-ed25519 \S+ [^\r\n]*)/.exec(screen)?.[1] ?? 'no key on the screen')
        return '\r'
      } },
      { expect: /deploy can read git@localhost:\/srv\/git\/bot\.git with its deploy key/, send: '' },
      { expect: /Enter Telegram Bot Token: /, send: 'not-a-token\r' },
      { expect: /Invalid: must look like 123456789:.*Try again\.\s+Enter Telegram Bot Token: /s, send: `${TOKEN}\r` },
      { expect: /Enter Telegram Webhook URL: /, send: 'http://bot.ttg-e2e.test/webhook\r' },
      { expect: /Invalid: must use https:\/\/.*Enter Telegram Webhook URL: /s, send: 'https://bot.ttg-e2e.test/webhook\r' },
      { expect: /Enter PostgreSQL Password \(empty: generate one\): /, send: `${password}\r` },
      { expect: /Enter Stripe API Key: /, send: `${STRIPE}\r` },
      { expect: /Enter domain name for SSL \[bot\.ttg-e2e\.test\]: /, send: '\r' },
      // Enter: no off-site copies (the bucket is optional; the droplet still backs up locally).
      { expect: /Off-site backup bucket \(S3 or DigitalOcean Spaces; empty: no off-site copies\): /, send: '\r' },
      // Enter: point-in-time recovery stays off (the default)
      { expect: /Point-in-time recovery: archive PostgreSQL WAL continuously.*\(y\/n\) \[n\]: /, send: '\r' },
      // Enter: no monitoring (the default; test/e2e/monitoring.test.ts turns it on)
      { expect: /Monitoring: Prometheus and Alertmanager .*\(y\/n\) \[n\]: /, send: '\r' },
    ], 540_000)
    expect(r.code, r.transcript).toBe(0)
    expectInOrder(r.transcript, ['Configuring environment variables', 'Off-site backup copies: off', 'Point-in-time recovery: off', 'Configuring SSL certificates', 'All services healthy', 'Registering the Telegram webhook', 'Telegram webhook set to TELEGRAM_WEBHOOK_URL', 'Setup complete - system ready for production'])
    // What was typed at the visible prompts is echoed; the secrets never are.
    expect(r.transcript).toContain('https://bot.ttg-e2e.test/webhook')
    for (const secret of [TOKEN, password, STRIPE]) expect(r.transcript).not.toContain(secret)
    expect(r.transcript.match(/Enter Telegram Bot Token: /g)).toHaveLength(2)
    expect(r.transcript.match(/Deploy key: ssh-ed25519 /g)).toHaveLength(1)
    expect(r.transcript.match(/cannot read git@localhost:\/srv\/git\/bot\.git yet/g)).toHaveLength(2)

    const env2 = parseEnvFile(await d.readFile(`${d.deployDir}/.env.production`))
    expect(env2).toMatchObject({ TELEGRAM_BOT_TOKEN: TOKEN, POSTGRES_PASSWORD: password, STRIPE_API_KEY: STRIPE, TELEGRAM_WEBHOOK_URL: 'https://bot.ttg-e2e.test/webhook', DOMAIN: 'bot.ttg-e2e.test' })
    expect(env2.DATABASE_URL).toMatch(/^postgresql:\/\/bot:[A-Za-z0-9]{32}@postgres:5432\/toogoodtogo$/)
    const log = await d.readFile(LOG_FILE)
    for (const secret of [TOKEN, password, STRIPE, env2.TELEGRAM_WEBHOOK_SECRET!]) expect(log).not.toContain(secret)

    // Once the stack was healthy, Telegram's webhook was set (none was), with the secret nginx checks.
    expect(api.calls.map((c) => c.method)).toEqual(['getWebhookInfo', 'setWebhook'])
    expect(api.callsOf('setWebhook').map((c) => c.body)).toEqual([{ url: HOOK, secret_token: env2.TELEGRAM_WEBHOOK_SECRET }])
    expect(api.calls.every((c) => c.token === TOKEN)).toBe(true)
    expect((await d.exec(['stat', '-c', '%U', `${d.deployDir}/webhook.json`])).stdout.trim()).toBe('deploy')

    // Webhook mode end to end: ufw opens 80/443, nginx terminates TLS with the self-signed
    // certificate and passes Telegram's calls (secret header) to the bot, and nothing else.
    const ufw = await d.exec(['ufw', 'status'])
    expect(ufw.stdout).toMatch(/^80\/tcp\s+ALLOW/m)
    expect(ufw.stdout).toMatch(/^443\/tcp\s+ALLOW/m)
    const call = (secret: string) => spawnSync('curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', '-H', `X-Telegram-Bot-Api-Secret-Token: ${secret}`, '-d', '{}', `https://127.0.0.1:${httpsPort}/webhook`], { encoding: 'utf8' }).stdout
    expect(call(env2.TELEGRAM_WEBHOOK_SECRET!)).toBe('200')
    expect(call('wrong')).toBe('403')
    const health = await healthCheck(d, [], { TELEGRAM_API_BASE: api.base })
    expect(health.code, health.stdout + health.stderr).toBe(0)
    expect(health.stdout).toMatch(/INFO: nginx: healthy/)
  })

  it('7b. a deploy leaves the equal webhook alone; TELEGRAM_WEBHOOK_URL emptied and the tag deployed: webhook deleted, nginx removed, and the stack unit starts no nginx again', async () => {
    const deploy = (tag: string) => d.exec([`${d.toolkitDir}/scripts/deploy.sh`, tag, '--yes'], { user: 'deploy', env: { DEPLOY_DIR: d.deployDir, NO_COLOR: '1', TELEGRAM_API_BASE: api.base } })
    const deployed = await deploy('v1.1.0')
    expect(deployed.code, deployed.stdout + deployed.stderr).toBe(0)
    expect(deployed.stdout).toContain('Starting v1.1.0 beside the running bot (blue-green)')
    expect(deployed.stdout).toContain('INFO: Telegram webhook already points at TELEGRAM_WEBHOOK_URL')
    expect(api.callsOf('setWebhook')).toHaveLength(1)

    // The operator's edit, then the running tag deployed again.
    const edited = await d.exec(['sed', '-i', 's|^TELEGRAM_WEBHOOK_URL=.*|TELEGRAM_WEBHOOK_URL=|', `${d.deployDir}/.env.production`], { user: 'deploy' })
    expect(edited.code, edited.stderr).toBe(0)
    const switched = await deploy('v1.1.0')
    expect(switched.code, switched.stdout + switched.stderr).toBe(0)
    expect(switched.stdout).toContain('INFO: Switching from webhook to polling mode')
    expect(switched.stdout).toContain('INFO: Telegram webhook deleted: polling mode')
    expect(api.callsOf('deleteWebhook').map((c) => c.body)).toEqual([{ drop_pending_updates: false }])
    expect(api.webhook.url).toBe('')
    const nginx = () => spawnSync('docker', ['ps', '-aq', '--filter', `label=com.docker.compose.project=${d.name}`, '--filter', 'label=com.docker.compose.service=nginx'], { encoding: 'utf8' }).stdout.trim()
    expect(nginx()).toBe('')

    // What the next boot runs: the unit reads the mode from .env.production, not from its own lines.
    expect((await d.exec(['systemctl', 'restart', 'toogoodtogo.service'])).code).toBe(0)
    expect((await d.exec(['systemctl', 'is-active', 'toogoodtogo.service'])).stdout.trim()).toBe('active')
    expect(nginx()).toBe('')
    const health = await healthCheck(d, ['--wait', '120'], { TELEGRAM_API_BASE: api.base })
    expect(health.code, health.stdout + health.stderr).toBe(0)
    expect(health.stdout).toContain('INFO: nginx: not deployed')
    expect(await botVersion(d)).toBe('v1.1.0')
    expect(((await stackContainersOf(d, 'bot'))).split('\n')).toHaveLength(1)
  })
})

describe("a step that fails (the operator's own deploy key)", () => {
  let d: Droplet
  let answers: string
  beforeAll(async () => {
    d = await createDroplet(image, 'c')
    // The operator already has a key the repository accepts, root's and root's only: DEPLOY_KEY_FILE.
    const repo = await gitHostOverSsh(d, bed.APP_REPO!)
    d.env.APP_REPO_URL = repo.url
    const key = await d.sh("ssh-keygen -q -t ed25519 -N '' -C 'operator key' -f /root/bot_deploy_key && cat /root/bot_deploy_key.pub")
    expect(key.code, key.stderr).toBe(0)
    await repo.authorize(key.stdout)
    answers = await writeAnswers(d, { TELEGRAM_BOT_TOKEN: TOKEN, STRIPE_API_KEY: STRIPE, ...IMAGES, DEPLOY_KEY_FILE: '/root/bot_deploy_key' })
  })
  afterAll(async () => d?.destroy())
  stopAfterFirstFailure()

  it('8. a package that cannot be installed: exit 1 with a clear error before any change', async () => {
    const failed = await d.setup(['--yes', '--env-file', answers], { SETUP_EXTRA_PACKAGES: 'ttg-no-such-package' })
    expect(failed.code, failed.stdout + failed.stderr).toBe(1)
    expect(failed.stderr).toMatch(/ERROR: apt-get failed: .*Unable to locate package ttg-no-such-package/)
    expect(failed.stderr).toMatch(/ERROR: Setup failed at: Updating system packages\. Fix the cause and run setup-droplet again/)
    expect((await d.exec(['test', '-e', `${d.deployDir}/.setup-complete`])).code).not.toBe(0)
  })

  it('9. a release whose bot reports a failed startup check: exit 1 as soon as that is certain, saying why (not after 5 minutes); nothing recorded', async () => {
    const r = await d.setup(['--yes', '--env-file', answers], { APP_VERSION: 'v1.3.0' })
    expect(r.code, r.stdout + r.stderr).toBe(1)
    expect(r.stderr).toMatch(/ERROR: v1\.3\.0 will not become healthy: the bot reports a failed startup check: .*PAYMENTS_WEBHOOK_SECRET is not set \(after (\d+)s; waiting the full 5 minutes would not change it\)/)
    const waited = Number(/after (\d+)s; waiting the full/.exec(r.stderr)?.[1])
    expect(waited).toBeLessThan(120)
    expect(r.stderr).toMatch(/ERROR: Setup failed at: Running health checks/)
    // The deploy user read the repository with a copy of the operator's key, none generated.
    expect(r.stdout).toContain('INFO: Installing the deploy key /root/bot_deploy_key for deploy as /home/deploy/.ssh/toogoodtogo_deploy_key')
    expect(r.stdout).not.toContain('Creating an SSH deploy key')
    const keys = await d.exec(['stat', '-c', '%a %U %n', '/home/deploy/.ssh/toogoodtogo_deploy_key'])
    expect(keys.stdout.trim()).toBe('600 deploy /home/deploy/.ssh/toogoodtogo_deploy_key')
    expect((await d.exec(['test', '-e', '/home/deploy/.ssh/id_ed25519'])).code).not.toBe(0)
    expect((await d.exec(['test', '-e', `${d.deployDir}/artifacts.json`])).code).not.toBe(0)
    expect((await d.exec(['test', '-e', `${d.deployDir}/.setup-complete`])).code).not.toBe(0)
  })

  it('10. until setup has completed, a re-run applies the fixed answers: a typo in BOT_IMAGE fails (exit 1, "Fix the cause and run setup-droplet again") keeping only the database credentials its volume was initialised with; the file fixed, the re-run completes with the new BOT_IMAGE', async () => {
    const envFile = `${d.deployDir}/.env.production`
    const earlier = parseEnvFile(await d.readFile(envFile))
    const typo = `${bed.BOT_IMAGE}-typo`
    const fixed = 'sk_test_fixed_after_first_run'
    const given = { TELEGRAM_BOT_TOKEN: TOKEN, STRIPE_API_KEY: fixed, ...IMAGES, DEPLOY_KEY_FILE: '/root/bot_deploy_key' }
    const failed = await d.setup(['--yes', '--env-file', await writeAnswers(d, { ...given, BOT_IMAGE: typo })])
    expect(failed.code, failed.stdout + failed.stderr).toBe(1)
    expect(failed.stdout).toContain(`INFO: Applying this run's answers to ${envFile} (written by an earlier run that did not complete); kept from it: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, DATABASE_URL (the database in volume ${d.name}_postgres_data was initialised with them)`)
    expect(failed.stderr).toMatch(/ERROR: Setup failed at: Starting services\. Fix the cause and run setup-droplet again/)
    expect(parseEnvFile(await d.readFile(envFile))).toMatchObject({ BOT_IMAGE: typo, STRIPE_API_KEY: fixed, POSTGRES_PASSWORD: earlier.POSTGRES_PASSWORD, DATABASE_URL: earlier.DATABASE_URL })

    // v1.3.0 migrated the database past what v1.0.0 knows: start over with an empty one, as an
    // operator would (`docker compose down --volumes`): then nothing initialised is left to keep.
    expect((await d.exec(['systemctl', 'stop', 'toogoodtogo.service'])).code).toBe(0)
    removeStack(d)
    const again = await d.setup(['--yes', '--env-file', await writeAnswers(d, given)])
    expect(again.code, again.stdout + again.stderr).toBe(0)
    expect(again.stdout).toMatch(/INFO: Applying this run's answers to \S+\/\.env\.production \(written by an earlier run that did not complete\)$/m)
    expect(again.stdout + again.stderr + failed.stdout + failed.stderr).not.toContain(fixed)
    expect(again.stdout).toContain('Setup complete - system ready for production')
    const env = parseEnvFile(await d.readFile(envFile))
    expect(env).toMatchObject({ BOT_IMAGE: bed.BOT_IMAGE, STRIPE_API_KEY: fixed, APP_VERSION: 'v1.0.0' })
    expect((await d.exec(['stat', '-c', '%a %U', envFile])).stdout.trim()).toBe('600 deploy')
    expect(JSON.parse(await d.readFile(`${d.deployDir}/setup_state.json`))).toMatchObject({ setup_completed_at: expect.stringMatching(/^\d{4}-/) })
    expect((await healthCheck(d)).code).toBe(0)
    expect(await botVersion(d)).toBe('v1.0.0')
  })

  it('10b. `tsx scripts/deploy.ts --help` works from the toolkit directory, for root and the deploy user (the design card\'s line)', async () => {
    for (const user of [undefined, 'deploy']) {
      const r = await d.exec(['sh', '-c', `cd ${d.toolkitDir} && tsx scripts/deploy.ts --help`], user ? { user } : {})
      expect(r.code, `${user ?? 'root'}: ${r.stdout}${r.stderr}`).toBe(0)
      expect(r.stdout).toContain('Usage: deploy <git-tag>')
    }
  })

  it('every step is idempotent: over a finished host without its marker, a run changes nothing else', async () => {
    const before = await hostSnapshot(d)
    const containers = stackContainers(d)
    expect((await d.exec(['rm', `${d.deployDir}/.setup-complete`])).code).toBe(0)
    const r = await d.setup(['--yes', '--env-file', answers])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toContain('Repository already cloned at')
    expect(r.stdout).toContain(`Keeping ${d.deployDir}/.env.production from an earlier run`)
    expect(r.stdout).not.toMatch(/Wrote \/etc\/systemd/)
    const withoutMarker = (s: string) => s.split('\n').filter((l) => !l.includes('.setup-complete')).join('\n')
    expect(withoutMarker(await hostSnapshot(d))).toBe(withoutMarker(before))
    expect(stackContainers(d)).toBe(containers)
  })
})
