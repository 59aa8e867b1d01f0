import { spawnSync } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseEnvFile } from '../../lib/env-file.ts'
import { createDroplet, ensureDropletImage, freePort, hostSnapshot, runOnPty, stackContainers, type Droplet } from '../support/droplet.ts'
import { LOG_LINE } from '../support/scripts.ts'
import { bedEnv } from '../support/stack.ts'

// setup-droplet.sh on "fresh droplets": systemd-booted Debian 12 containers using the bed's Docker
// engine through the host's socket (test/support/droplet.ts). Each describe block boots its own.
const bed = bedEnv()
const TOKEN = '123456:E2E-droplet_token'
const STRIPE = 'sk_test_droplet_key'
const LOG_FILE = '/var/log/toogoodtogo/deployment.log'
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

async function healthCheck(d: Droplet, args: string[] = []): Promise<{ code: number; stdout: string; stderr: string }> {
  return d.exec([`${d.toolkitDir}/scripts/health-check.sh`, ...args], { user: 'deploy', env: { DEPLOY_DIR: d.deployDir, COMPOSE_PROJECT_NAME: d.name, NO_COLOR: '1' } })
}

async function backupIndex(d: Droplet): Promise<{ backups: { backup_type: string; backup_id: string; last_drill: { outcome: string } | null }[] }> {
  return JSON.parse(await d.readFile(`${BACKUP_DIR}/backup_index.json`))
}

describe('a fresh droplet, non-interactive (polling mode)', () => {
  let d: Droplet
  let answers: string
  beforeAll(async () => {
    d = await createDroplet(image, 'a')
    answers = await writeAnswers(d, { TELEGRAM_BOT_TOKEN: TOKEN, STRIPE_API_KEY: STRIPE, ...IMAGES })
  })
  afterAll(async () => d?.destroy())

  it('1. setup-droplet.sh --env-file --yes: exit 0, marker, units enabled, timers listed, env file 600, ufw, healthy', async () => {
    const r = await d.setup(['--yes', '--env-file', answers])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expectInOrder(r.stdout, CONTRACT_LINES)
    expect(r.stdout).toContain('Skipping nginx and certbot: polling mode has no public ingress')
    expect(r.stdout).toContain('Docker 20.10')
    expect(r.stdout).toMatch(/already works; not installing it/)
    for (const line of (r.stdout + r.stderr).trim().split('\n')) expect(line).toMatch(LOG_LINE)

    const marker = JSON.parse(await d.readFile(`${d.deployDir}/.setup-complete`))
    expect(marker).toMatchObject({ mode: 'polling', app_version: 'v1.0.0', compose_project: d.name })

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
    expect(env.DATABASE_URL).toBe(`postgresql://toogoodtogo:${env.POSTGRES_PASSWORD}@postgres:5432/toogoodtogo`)
    expect(JSON.stringify(env)).not.toContain('CHANGE_ME')

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

  it('5. systemctl start of the backup service indexes a scheduled backup; the drill service records its outcome', async () => {
    const backup = await d.exec(['systemctl', 'start', 'toogoodtogo-backup.service'])
    expect(backup.code, backup.stderr).toBe(0)
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
  })

  it('6. after a reboot the stack is healthy again within 5 minutes, on the version deployed last, with no command typed', async () => {
    // A deploy as deploy.ts does it: APP_VERSION on the command line, .env.production untouched.
    const compose = ['docker', 'compose', '--project-name', d.name, '--file', `${d.toolkitDir}/deployment/docker-compose.prod.yml`, '--env-file', `${d.deployDir}/.env.production`]
    const deployed = { APP_VERSION: 'v1.1.0', ENV_FILE: `${d.deployDir}/.env.production` }
    expect((await d.exec([...compose, 'run', '--rm', '-T', '--no-deps', 'bot', 'alembic', 'upgrade', 'head'], { user: 'deploy', env: deployed })).code).toBe(0)
    expect((await d.exec([...compose, 'up', '--detach', 'bot'], { user: 'deploy', env: deployed })).code).toBe(0)
    expect(await botVersion(d)).toBe('v1.1.0')
    expect(parseEnvFile(await d.readFile(`${d.deployDir}/.env.production`)).APP_VERSION).toBe('v1.0.0')

    const before = stackContainers(d)
    const started = Date.now()
    await d.reboot()
    const health = await healthCheck(d, ['--wait', '300'])
    expect(health.code, health.stdout + health.stderr).toBe(0)
    expect(health.stdout).toContain('All services healthy')
    expect(Date.now() - started).toBeLessThan(300_000)
    // Really down and up again: the shutdown stopped the containers, the boot started them, and
    // the bot came back with the image it ran, not the older tag .env.production still names.
    expect(stackContainers(d)).not.toBe(before)
    expect(stackContainers(d)).toMatch(/running/)
    expect(await botVersion(d)).toBe('v1.1.0')
    expect((await d.exec(['systemctl', 'is-active', 'toogoodtogo.service', 'toogoodtogo-healthcheck.service'])).stdout.trim().split('\n')).toEqual(['active', 'active'])
    const journal = await d.exec(['journalctl', '--no-pager', '-b', '-u', 'toogoodtogo-healthcheck.service'])
    expect(journal.stdout).toContain('All services healthy')
  })
})

async function botVersion(d: Droplet): Promise<string> {
  const waited = await healthCheck(d, ['--wait', '120'])
  expect(waited.code, waited.stdout + waited.stderr).toBe(0)
  const json = await healthCheck(d, ['bot', '--json'])
  return (JSON.parse(json.stdout) as { services: { bot: { version: string } } }).services.bot.version
}

describe('an interactive run on a terminal (webhook mode, self-signed certificate)', () => {
  let d: Droplet
  let httpsPort: number
  beforeAll(async () => {
    d = await createDroplet(image, 'b')
    httpsPort = await freePort()
  })
  afterAll(async () => d?.destroy())

  it('3. a bad bot token is asked again; no secret appears in the terminal or the log', async () => {
    const password = 'InteractivePw0123456'
    const env = {
      ...IMAGES,
      // nginx publishes on the host's engine: loopback only, on ports free there.
      NGINX_HTTP_PORT: `127.0.0.1:${await freePort()}`,
      NGINX_HTTPS_PORT: `127.0.0.1:${httpsPort}`,
      LETSENCRYPT_DIR: `${d.deployDir}/letsencrypt`,
      CERTBOT_WEBROOT: `${d.deployDir}/certbot-webroot`,
    }
    const r = await runOnPty(d.setupArgvWithTty(['--webhook', '--self-signed'], env), [
      { expect: /Type "yes" to continue: /, send: 'yes\r' },
      { expect: /Enter Telegram Bot Token: /, send: 'not-a-token\r' },
      { expect: /Invalid: must look like 123456789:.*Try again\.\s+Enter Telegram Bot Token: /s, send: `${TOKEN}\r` },
      { expect: /Enter Telegram Webhook URL: /, send: 'http://bot.ttg-e2e.test/webhook\r' },
      { expect: /Invalid: must use https:\/\/.*Enter Telegram Webhook URL: /s, send: 'https://bot.ttg-e2e.test/webhook\r' },
      { expect: /Enter PostgreSQL Password \(empty: generate one\): /, send: `${password}\r` },
      { expect: /Enter Stripe API Key: /, send: `${STRIPE}\r` },
      { expect: /Enter domain name for SSL \[bot\.ttg-e2e\.test\]: /, send: '\r' },
    ], 540_000)
    expect(r.code, r.transcript).toBe(0)
    expectInOrder(r.transcript, ['Configuring environment variables', 'Configuring SSL certificates', 'All services healthy', 'Setup complete - system ready for production'])
    // What was typed at the visible prompts is echoed; the secrets never are.
    expect(r.transcript).toContain('https://bot.ttg-e2e.test/webhook')
    for (const secret of [TOKEN, password, STRIPE]) expect(r.transcript).not.toContain(secret)
    expect(r.transcript.match(/Enter Telegram Bot Token: /g)).toHaveLength(2)

    const env2 = parseEnvFile(await d.readFile(`${d.deployDir}/.env.production`))
    expect(env2).toMatchObject({ TELEGRAM_BOT_TOKEN: TOKEN, POSTGRES_PASSWORD: password, STRIPE_API_KEY: STRIPE, TELEGRAM_WEBHOOK_URL: 'https://bot.ttg-e2e.test/webhook', DOMAIN: 'bot.ttg-e2e.test' })
    expect(env2.DATABASE_URL).toBe(`postgresql://toogoodtogo:${password}@postgres:5432/toogoodtogo`)
    const log = await d.readFile(LOG_FILE)
    for (const secret of [TOKEN, password, STRIPE, env2.TELEGRAM_WEBHOOK_SECRET!]) expect(log).not.toContain(secret)

    // Webhook mode end to end: ufw opens 80/443, nginx terminates TLS with the self-signed
    // certificate and passes Telegram's calls (secret header) to the bot, and nothing else.
    const ufw = await d.exec(['ufw', 'status'])
    expect(ufw.stdout).toMatch(/^80\/tcp\s+ALLOW/m)
    expect(ufw.stdout).toMatch(/^443\/tcp\s+ALLOW/m)
    const call = (secret: string) => spawnSync('curl', ['-sk', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', '-H', `X-Telegram-Bot-Api-Secret-Token: ${secret}`, '-d', '{}', `https://127.0.0.1:${httpsPort}/webhook`], { encoding: 'utf8' }).stdout
    expect(call(env2.TELEGRAM_WEBHOOK_SECRET!)).toBe('200')
    expect(call('wrong')).toBe('403')
    const health = await healthCheck(d)
    expect(health.stdout).toMatch(/INFO: nginx: healthy/)
  })
})

describe('a step that fails', () => {
  let d: Droplet
  let answers: string
  beforeAll(async () => {
    d = await createDroplet(image, 'c')
    answers = await writeAnswers(d, { TELEGRAM_BOT_TOKEN: TOKEN, STRIPE_API_KEY: STRIPE, ...IMAGES })
  })
  afterAll(async () => d?.destroy())

  it('4. a package that cannot be installed: exit 1 with a clear error; the next run completes', async () => {
    const failed = await d.setup(['--yes', '--env-file', answers], { SETUP_EXTRA_PACKAGES: 'ttg-no-such-package' })
    expect(failed.code, failed.stdout + failed.stderr).toBe(1)
    expect(failed.stderr).toMatch(/ERROR: apt-get failed: .*Unable to locate package ttg-no-such-package/)
    expect(failed.stderr).toMatch(/ERROR: Setup failed at: Updating system packages\. Fix the cause and run setup-droplet again/)
    expect((await d.exec(['test', '-e', `${d.deployDir}/.setup-complete`])).code).not.toBe(0)

    const again = await d.setup(['--yes', '--env-file', answers])
    expect(again.code, again.stdout + again.stderr).toBe(0)
    expect(again.stdout).toContain('Setup complete - system ready for production')
    expect((await healthCheck(d)).code).toBe(0)
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
