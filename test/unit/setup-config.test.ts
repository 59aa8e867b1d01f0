import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { TOOLKIT_DIR } from '../../lib/core/config.ts'
import { composeDatabaseUrl, optionalKeys, renderEnvFile, RULES, templateKeys, validateDeploymentConfig } from '../../lib/core/deployment-config.ts'
import { parseEnvFile } from '../../lib/core/env-file.ts'
import { parseCli, type CliSpec } from '../../lib/core/cli.ts'
import { changedAnswers, loadSetupSettings } from '../../lib/setup/settings.ts'
import { gitEnv, gitFailureReason, gitSshCommand, isSshUrl, sshHost } from '../../lib/commands/git.ts'
import { deployKeyPath, newestReleaseTag, parsePasswd } from '../../lib/commands/host.ts'
import { dockerPackages, parseAptPolicy } from '../../lib/commands/apt.ts'
import { firewallCommands, parseUfwAdded, publishedPortProblems } from '../../lib/commands/ufw.ts'
import { renderTemplate, renderUnits, unitValuesProblems, type UnitValues } from '../../lib/setup/units.ts'
import { unitWarnings } from '../../lib/commands/systemd.ts'

const template = fs.readFileSync(path.join(TOOLKIT_DIR, 'deployment/.env.production.template'), 'utf8')
const composeFile = fs.readFileSync(path.join(TOOLKIT_DIR, 'deployment/docker-compose.prod.yml'), 'utf8')

describe('the data model\'s validation rules', () => {
  it('bot token: digits, a colon, then [A-Za-z0-9_-]', () => {
    expect(RULES.TELEGRAM_BOT_TOKEN!('123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw')).toBeNull()
    expect(RULES.TELEGRAM_BOT_TOKEN!('123:a-b_c')).toBeNull()
    for (const bad of ['not-a-token', ':abc', '123:', '12a:abc', '123:ab c', '123:ab$c']) expect(RULES.TELEGRAM_BOT_TOKEN!(bad), bad).toMatch(/must look like/)
  })
  it('webhook URL must be https', () => {
    expect(RULES.TELEGRAM_WEBHOOK_URL!('https://bot.example.com/webhook')).toBeNull()
    expect(RULES.TELEGRAM_WEBHOOK_URL!('http://bot.example.com/webhook')).toMatch(/https/)
    expect(RULES.TELEGRAM_WEBHOOK_URL!('bot.example.com')).toMatch(/URL/)
    expect(RULES.TELEGRAM_WEBHOOK_URL!('https://u:p@bot.example.com/')).toMatch(/user or password/)
  })
  it('database_url must be a PostgreSQL URL; log_level an enum', () => {
    expect(RULES.DATABASE_URL!('postgresql://app:pw@postgres:5432/toogoodtogo')).toBeNull()
    expect(RULES.DATABASE_URL!('mysql://app:pw@db/x')).toMatch(/postgresql/)
    expect(RULES.DATABASE_URL!('nonsense')).toMatch(/not a valid URL/)
    for (const level of ['DEBUG', 'INFO', 'WARNING', 'ERROR']) expect(RULES.LOG_LEVEL!(level)).toBeNull()
    expect(RULES.LOG_LEVEL!('debug')).toMatch(/one of DEBUG, INFO, WARNING, ERROR/)
  })
  it('reports every problem at once, naming keys, never quoting a value', () => {
    const vars = { ...parseEnvFile(template), TELEGRAM_BOT_TOKEN: 'sekrit-but-wrong', LOG_LEVEL: 'LOUD', POSTGRES_PASSWORD: 'short' }
    const problems = validateDeploymentConfig(vars, 'polling')
    expect(problems.map((p) => p.key).sort()).toEqual(['DATABASE_URL', 'LOG_LEVEL', 'POSTGRES_PASSWORD', 'STRIPE_API_KEY', 'TELEGRAM_BOT_TOKEN'])
    expect(JSON.stringify(problems)).not.toContain('sekrit-but-wrong')
    expect(problems.find((p) => p.key === 'STRIPE_API_KEY')!.message).toBe('still says CHANGE_ME')
  })
  it('DATABASE_URL pointing at the compose service must repeat POSTGRES_PASSWORD', () => {
    const base = { TELEGRAM_BOT_TOKEN: '1:a', STRIPE_API_KEY: 'sk_test_x', BOT_IMAGE: 'r/bot', APP_VERSION: 'v1.0.0', LOG_LEVEL: 'INFO', POSTGRES_DB: 'toogoodtogo', POSTGRES_USER: 'toogoodtogo', POSTGRES_PASSWORD: 'Abcdefgh12345', REDIS_URL: 'redis://redis:6379/0' }
    expect(validateDeploymentConfig({ ...base, DATABASE_URL: composeDatabaseUrl('toogoodtogo', 'Abcdefgh12345', 'toogoodtogo') }, 'polling')).toEqual([])
    expect(validateDeploymentConfig({ ...base, DATABASE_URL: composeDatabaseUrl('toogoodtogo', 'Other1234567', 'toogoodtogo') }, 'polling')).toEqual([
      { key: 'DATABASE_URL', message: 'does not match POSTGRES_PASSWORD (it points at the compose service "postgres")' },
    ])
    // The bot's own role (lib/db/app-role.ts) has a password of its own; the database must still match.
    expect(validateDeploymentConfig({ ...base, DATABASE_URL: composeDatabaseUrl('bot', 'B0tOwnPassword', 'toogoodtogo') }, 'polling')).toEqual([])
    expect(validateDeploymentConfig({ ...base, DATABASE_URL: composeDatabaseUrl('bot', 'B0tOwnPassword', 'other') }, 'polling')).toEqual([
      { key: 'DATABASE_URL', message: 'does not match POSTGRES_DB (it points at the compose service "postgres")' },
    ])
    // A managed database is another host: its password is its own.
    expect(validateDeploymentConfig({ ...base, DATABASE_URL: 'postgresql://doadmin:x@db.example.com:25060/app?sslmode=require' }, 'polling')).toEqual([])
  })
  it('webhook mode also needs the URL, its secret and the domain; polling mode must not have a URL', () => {
    const keys = validateDeploymentConfig({}, 'webhook').map((p) => p.key)
    expect(keys).toEqual(expect.arrayContaining(['TELEGRAM_WEBHOOK_URL', 'TELEGRAM_WEBHOOK_SECRET', 'DOMAIN']))
    expect(validateDeploymentConfig({ TELEGRAM_WEBHOOK_URL: 'https://a.example.com/w' }, 'polling')).toContainEqual({ key: 'TELEGRAM_WEBHOOK_URL', message: 'must be empty in polling mode' })
  })
})

describe('.env.production from the template', () => {
  it('fills values in place, uncomments given overrides, keeps comments, appends the rest', () => {
    const text = renderEnvFile(template, { TELEGRAM_BOT_TOKEN: '1:abc', POSTGRES_IMAGE: 'reg/pg:15', COMPOSE_PROJECT_NAME: 'ttgx' }, '# header')
    const lines = text.split('\n')
    expect(lines[0]).toBe('# header')
    expect(lines).toContain('TELEGRAM_BOT_TOKEN=1:abc')
    expect(lines).toContain('POSTGRES_IMAGE=reg/pg:15')
    expect(lines).not.toContain('# POSTGRES_IMAGE=postgres:15')
    expect(lines).toContain('# REDIS_IMAGE=redis:7')
    expect(lines.slice(-2)).toEqual(['COMPOSE_PROJECT_NAME=ttgx', ''])
    expect(text.split('\n').filter((l) => l.startsWith('#')).length).toBeGreaterThan(20)
    expect(parseEnvFile(text)).toMatchObject({ TELEGRAM_BOT_TOKEN: '1:abc', POSTGRES_DB: 'toogoodtogo', COMPOSE_PROJECT_NAME: 'ttgx' })
  })
  it('knows the template\'s keys and its optional overrides', () => {
    expect(templateKeys(template)).toEqual(expect.arrayContaining(['TELEGRAM_BOT_TOKEN', 'POSTGRES_PASSWORD', 'DATABASE_URL', 'STRIPE_API_KEY', 'DOMAIN', 'LETSENCRYPT_DIR']))
    expect(optionalKeys(template)).toEqual([
      'OFFSITE_S3_ENDPOINT', 'OFFSITE_S3_REGION', 'OFFSITE_S3_BUCKET', 'OFFSITE_S3_PREFIX', 'OFFSITE_S3_ACCESS_KEY_ID', 'OFFSITE_S3_SECRET_ACCESS_KEY',
      'BACKUP_AGE_RECIPIENT', 'BACKUP_AGE_IDENTITY_FILE', 'OFFSITE_RETENTION_COUNT', 'OFFSITE_RETENTION_DAYS',
      'PITR_ENABLED', 'PITR_REPO_DIR', 'PITR_CIPHER_PASSWORD', 'PITR_ARCHIVE_TIMEOUT', 'PITR_RETENTION_FULL',
      'MONITORING_ENABLED', 'ALERTMANAGER_URL', 'ALERTMANAGER_SECRETS_DIR', 'MONITORING_SUBNET', 'NODE_EXPORTER_HOST', 'PROMETHEUS_PORT', 'ALERTMANAGER_PORT', 'GRAFANA_PORT',
      'PROMETHEUS_RETENTION', 'PROMETHEUS_MEM_LIMIT', 'ALERTMANAGER_MEM_LIMIT', 'PROMETHEUS_IMAGE', 'ALERTMANAGER_IMAGE', 'POSTGRES_EXPORTER_IMAGE', 'REDIS_EXPORTER_IMAGE',
      'NGINX_EXPORTER_IMAGE', 'GRAFANA_IMAGE', 'PROMETHEUS_CONFIG', 'ALERTMANAGER_CONFIG',
      'POSTGRES_IMAGE', 'REDIS_IMAGE', 'NGINX_IMAGE', 'BOT_MEM_LIMIT', 'POSTGRES_MEM_LIMIT', 'REDIS_MEM_LIMIT', 'NGINX_MEM_LIMIT', 'NGINX_HTTP_PORT', 'NGINX_HTTPS_PORT'])
  })
})

describe('setup settings', () => {
  it('defaults; the environment wins over the --env-file answers; bad values name the variable', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-setup-'))
    const answers = path.join(dir, 'answers.env')
    fs.writeFileSync(answers, 'DEPLOY_USER=ops\nSTRIPE_API_KEY=sk_test_file\nSETUP_EXTRA_PACKAGES=htop jq\n')
    const s = loadSetupSettings({ DEPLOY_DIR: '/srv/ttg', STRIPE_API_KEY: 'sk_test_env' }, answers)
    expect(s).toMatchObject({ DEPLOY_USER: 'ops', appDir: '/srv/ttg/app', SSH_PORT: 22, SETUP_EXTRA_PACKAGES: ['htop', 'jq'], markerFile: '/srv/ttg/.setup-complete', logDir: '/var/log/toogoodtogo' })
    expect(s.SETUP_BASE_PACKAGES).toEqual(['ufw', 'git', 'openssh-client', 'ca-certificates', 'openssl', 'logrotate', 'age', 'curl'])
    expect(s.input.STRIPE_API_KEY).toBe('sk_test_env')
    expect(() => loadSetupSettings({ DEPLOY_USER: 'root' }, undefined)).toThrow(/Invalid DEPLOY_USER="root": must not be root/)
    expect(() => loadSetupSettings({ SETUP_EXTRA_PACKAGES: 'ok; rm -rf /' }, undefined)).toThrow(/Invalid SETUP_EXTRA_PACKAGES/)
    expect(() => loadSetupSettings({}, path.join(dir, 'missing.env'))).toThrow(/--env-file .*missing\.env: no such file/)
    expect(loadSetupSettings({ DEPLOY_KEY_FILE: '/root/bot_deploy_key' }, undefined).DEPLOY_KEY_FILE).toBe('/root/bot_deploy_key')
    expect(() => loadSetupSettings({ DEPLOY_KEY_FILE: 'bot_deploy_key' }, undefined)).toThrow(/Invalid DEPLOY_KEY_FILE="bot_deploy_key": must be an absolute path/)
  })
  it('MIGRATE_COMMAND comes from the answers, else the default', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-setup-'))
    const answers = path.join(dir, 'answers.env')
    fs.writeFileSync(answers, 'MIGRATE_COMMAND=python3 -m app.migrate\n')
    expect(loadSetupSettings({}, answers).cfg.MIGRATE_COMMAND).toBe('python3 -m app.migrate')
    expect(loadSetupSettings({}, undefined).cfg.MIGRATE_COMMAND).toBe('alembic upgrade head')
  })
})

describe('the arguments the script reads', () => {
  const spec: CliSpec = { name: 't', summary: '', usage: '', positionals: [], maxPositionals: 0, options: { 'env-file': { type: 'string', description: '' }, yes: { type: 'boolean', description: '' } }, exitCodes: [], examples: [] }
  it("a leading '--' (scripts/run.sh's, which stops node reading --env-file) is taken off; nothing else", () => {
    expect(parseCli(spec, ['--', '--env-file', 'a.env', '--yes']).values).toMatchObject({ 'env-file': 'a.env', yes: true })
    expect(parseCli(spec, ['--env-file', 'a.env']).values).toMatchObject({ 'env-file': 'a.env' })
    expect(() => parseCli(spec, ['--yes', '--', 'extra'])).toThrow(/Unexpected argument: extra/)
  })
})

describe('a re-run over a kept .env.production', () => {
  it('names the answers whose value differs from the kept file, sorted; missing counts as empty; ignored keys skipped', () => {
    const kept = { TELEGRAM_BOT_TOKEN: '1:old', STRIPE_API_KEY: 'sk_test_same', TELEGRAM_WEBHOOK_URL: '', APP_VERSION: 'v1.0.0' }
    expect(changedAnswers({ TELEGRAM_BOT_TOKEN: '1:new', STRIPE_API_KEY: 'sk_test_same', TELEGRAM_WEBHOOK_URL: '', BOT_IMAGE: 'r/bot', APP_VERSION: 'v1.1.0' }, kept, ['APP_VERSION'])).toEqual(['BOT_IMAGE', 'TELEGRAM_BOT_TOKEN'])
    expect(changedAnswers({ DOMAIN: '' }, {})).toEqual([])
    expect(changedAnswers(kept, kept)).toEqual([])
  })
})

describe('package and Docker decisions', () => {
  const policy = (entries: Record<string, string>) => Object.entries(entries).map(([name, candidate]) => `${name}:\n  Installed: (none)\n  Candidate: ${candidate}\n  Version table:\n`).join('')
  it('Compose from Docker\'s repository, else Ubuntu\'s v2 package, else Debian\'s', () => {
    expect(dockerPackages(parseAptPolicy(policy({ 'docker-compose-plugin': '2.29.1-1~debian.12', 'docker-compose': '1.29.2-3' })))).toEqual(['docker.io', 'docker-compose-plugin'])
    expect(dockerPackages(parseAptPolicy(policy({ 'docker-compose-v2': '2.24.6', 'docker-compose': '1.29.2' })))).toEqual(['docker.io', 'docker-compose-v2'])
    expect(dockerPackages(parseAptPolicy(policy({ 'docker-compose': '1.29.2-3' })))).toEqual(['docker.io', 'docker-compose'])
    expect(dockerPackages(parseAptPolicy(policy({ 'docker-compose': '(none)' })))).toEqual(['docker.io'])
  })
  it('the newest vX.Y.Z tag by version order', () => {
    expect(newestReleaseTag('v1.10.0\nv1.9.0\nv1.2.0\n')).toBe('v1.10.0')
    expect(newestReleaseTag('nightly\nv2.0.0-rc1\nv1.3.0\n')).toBe('v1.3.0')
    expect(newestReleaseTag('')).toBeNull()
  })
})

describe('firewall', () => {
  it('polling: deny incoming, SSH only, enable', () => {
    expect(firewallCommands([], { webhook: false, sshPort: 22 })).toEqual([
      ['ufw', 'default', 'deny', 'incoming'], ['ufw', 'default', 'allow', 'outgoing'], ['ufw', 'allow', '22/tcp'], ['ufw', '--force', 'enable'],
    ])
  })
  it('webhook: 80 and 443 too; rules present are not added twice', () => {
    expect(firewallCommands(['allow 22/tcp'], { webhook: true, sshPort: 22 }).map((argv) => argv.slice(1).join(' '))).toEqual([
      'default deny incoming', 'default allow outgoing', 'allow 80/tcp', 'allow 443/tcp', '--force enable',
    ])
  })
  it('a polling host that was in webhook mode closes 80 and 443 again', () => {
    const added = parseUfwAdded("Added user rules (see 'ufw status' for running firewall):\nufw allow 2222/tcp\nufw allow 80/tcp\nufw allow 443/tcp\n")
    expect(added).toEqual(['allow 2222/tcp', 'allow 80/tcp', 'allow 443/tcp'])
    expect(firewallCommands(added, { webhook: false, sshPort: 2222 }).map((argv) => argv.slice(1).join(' '))).toEqual([
      'default deny incoming', 'default allow outgoing', 'delete allow 80/tcp', 'delete allow 443/tcp', '--force enable',
    ])
  })
  it('the production compose file publishes only nginx\'s 80 and 443', () => {
    expect(publishedPortProblems(composeFile)).toEqual([])
  })
  it('anything else published, or the host network, is refused (Docker bypasses ufw)', () => {
    const bad = composeFile
      .replace(/^ {2}redis:\n/m, '  redis:\n    ports:\n      - "6379:6379"\n')
      .replace(/^ {2}postgres:\n/m, '  postgres:\n    network_mode: host\n')
      .replace('      - "${NGINX_HTTPS_PORT:-443}:443"\n', '      - "${NGINX_HTTPS_PORT:-443}:443"\n      - "8080:8080"\n')
    expect(publishedPortProblems(bad)).toEqual([
      'postgres uses network_mode: host (every port it opens is public)',
      'redis publishes 6379:6379',
      'nginx publishes container port 8080 besides 80 and 443',
    ])
  })
})

describe('systemd units', () => {
  const values: UnitValues = {
    TOOLKIT_DIR: '/opt/toogoodtogo/deployment', DEPLOY_DIR: '/opt/toogoodtogo', ENV_FILE: '/opt/toogoodtogo/.env.production', BACKUP_DIR: '/opt/backups/postgres',
    LOG_FILE: '/var/log/toogoodtogo/deployment.log', LOG_DIR: '/var/log/toogoodtogo', COMPOSE_PROJECT_NAME: 'toogoodtogo', COMPOSE_FILE: '/opt/toogoodtogo/deployment/deployment/docker-compose.prod.yml',
    DEPLOY_USER: 'deploy', TSX: '/opt/toogoodtogo/deployment/node_modules/.bin/tsx', PATH: '/usr/bin:/bin',
  }
  const byName = Object.fromEntries(renderUnits(values).map((f) => [path.basename(f.file), f.content]))

  it('renders every template completely', () => {
    expect(Object.keys(byName).sort()).toEqual(['toogoodtogo', 'toogoodtogo-backup.service', 'toogoodtogo-backup.timer', 'toogoodtogo-failure@.service', 'toogoodtogo-healthcheck.service', 'toogoodtogo-notify-failure', 'toogoodtogo-restore-drill.service', 'toogoodtogo-restore-drill.timer', 'toogoodtogo.service'])
    for (const [name, content] of Object.entries(byName)) expect(content, name).not.toMatch(/@[A-Z_]+@/)
  })
  it('the stack unit requires Docker, brings the stack up and stops it', () => {
    const unit = byName['toogoodtogo.service']!
    expect(unit).toMatch(/^Requires=docker\.service$/m)
    expect(unit).toMatch(/^After=docker\.service network-online\.target$/m)
    expect(unit).toMatch(/^Type=oneshot$/m)
    expect(unit).toMatch(/^RemainAfterExit=yes$/m)
    // The toolkit derives the compose files and profiles from .env.production at each start (no
    // --profile baked in): a later switch between polling and webhook mode holds at the next boot.
    expect(unit).toContain('ExecStart=/opt/toogoodtogo/deployment/node_modules/.bin/tsx /opt/toogoodtogo/deployment/scripts/stack.ts up')
    expect(unit).toContain('ExecStop=/opt/toogoodtogo/deployment/node_modules/.bin/tsx /opt/toogoodtogo/deployment/scripts/stack.ts stop')
    expect(unit).not.toContain('--profile')
    for (const line of ['DEPLOY_DIR=/opt/toogoodtogo', 'ENV_FILE=/opt/toogoodtogo/.env.production', 'COMPOSE_PROJECT_NAME=toogoodtogo', 'DOCKER_COMPOSE_FILE=/opt/toogoodtogo/deployment/deployment/docker-compose.prod.yml']) {
      expect(unit).toContain(`Environment=${line}\n`)
    }
    expect(unit).toMatch(/^User=deploy$/m)
    expect(unit).toMatch(/^WantedBy=multi-user\.target$/m)
  })
  it('backups daily at 03:00 UTC, drills weekly, both persistent, by the toolkit\'s tsx', () => {
    expect(byName['toogoodtogo-backup.timer']).toMatch(/^OnCalendar=\*-\*-\* 03:00:00 UTC$/m)
    expect(byName['toogoodtogo-backup.timer']).toMatch(/^Persistent=true$/m)
    expect(byName['toogoodtogo-restore-drill.timer']).toMatch(/^OnCalendar=Sun \*-\*-\* 04:30:00 UTC$/m)
    expect(byName['toogoodtogo-restore-drill.timer']).toMatch(/^Persistent=true$/m)
    expect(byName['toogoodtogo-backup.service']).toContain('ExecStart=/opt/toogoodtogo/deployment/node_modules/.bin/tsx /opt/toogoodtogo/deployment/scripts/backup.ts scheduled')
    expect(byName['toogoodtogo-restore-drill.service']).toContain('ExecStart=/opt/toogoodtogo/deployment/node_modules/.bin/tsx /opt/toogoodtogo/deployment/scripts/restore.ts --drill')
    expect(byName['toogoodtogo-healthcheck.service']).toContain('scripts/health-check.ts --wait 300')
  })
  it('logrotate rotates LOG_FILE as the deploy user, never the audit log beside it', () => {
    const patterns = logrotatePatterns(byName['toogoodtogo']!)
    const rotated = (file: string) => patterns.some((p) => globToRegExp(p).test(file))
    expect(rotated('/var/log/toogoodtogo/deployment.log')).toBe(true)
    expect(rotated('/var/log/toogoodtogo/deployments.log')).toBe(false)
    expect(rotated('/var/log/toogoodtogo/anything.log')).toBe(false)
    expect(byName['toogoodtogo']).toMatch(/^\s+su deploy deploy$/m)
    expect(byName['toogoodtogo']).toMatch(/^\s+create 0640 deploy deploy$/m)
    // The audit log's own name is never the rotated file, whatever LOG_FILE is called.
    const other = renderUnits({ ...values, LOG_FILE: '/srv/logs/ttg.log', LOG_DIR: '/srv/logs' }).find((f) => f.file.endsWith('logrotate.d/toogoodtogo'))!
    expect(logrotatePatterns(other.content)).toEqual(['/srv/logs/ttg.log'])
  })
  it('refuses paths systemd would split or expand, and unknown placeholders', () => {
    expect(unitValuesProblems({ ...values, DEPLOY_DIR: '/opt/my deploy' })).toEqual(['DEPLOY_DIR=/opt/my deploy contains a space, quote, %, $ or ;, which systemd would split or expand'])
    expect(unitValuesProblems({ ...values, LOG_FILE: '/var/log/100%.log' })).toHaveLength(1)
    expect(() => renderTemplate('X=@NOPE@', {}, 'x.service')).toThrow(/x\.service: no value for placeholder @NOPE@/)
  })
  it('systemd-analyze lines about our units count as problems, others do not', () => {
    expect(unitWarnings('/etc/systemd/system/toogoodtogo.service:21: Failed to parse service type, ignoring: bogus\nfoo.service: whatever\n', ['/etc/systemd/system/toogoodtogo.service'])).toEqual([
      '/etc/systemd/system/toogoodtogo.service:21: Failed to parse service type, ignoring: bogus',
    ])
  })
})

/** The path patterns of a logrotate file's blocks (the words before each `{`). */
function logrotatePatterns(config: string): string[] {
  return config.split('\n').filter((l) => !l.trim().startsWith('#')).join('\n').match(/^[^\s{}][^{}]*(?=\{)/gm)?.flatMap((head) => head.trim().split(/\s+/)) ?? []
}

/** logrotate's glob(3) patterns: * and ? within one path component. */
function globToRegExp(pattern: string): RegExp {
  return new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]')}$`)
}

describe('the deploy user reaches the application repository on its own', () => {
  it('ssh URLs by git\'s rule (scp-like or ssh://); https, file and local paths are not', () => {
    for (const url of ['git@github.com:team/bot.git', 'github.com:team/bot.git', 'ssh://git@github.com/team/bot.git', 'ssh://git@[::1]:2222/srv/bot.git', 'git+ssh://h/x', 'git@localhost:/srv/git/bot.git']) expect(isSshUrl(url), url).toBe(true)
    for (const url of ['https://github.com/team/bot.git', 'file:///var/cache/app.git', '/srv/git/bot.git', './bot:v1', 'git://h/x']) expect(isSshUrl(url), url).toBe(false)
    expect(sshHost('git@github.com:team/bot.git')).toBe('github.com')
    expect(sshHost('ssh://git@gitlab.example.com:2222/team/bot.git')).toBe('gitlab.example.com')
    expect(sshHost('https://github.com/team/bot.git')).toBeNull()
  })

  it('the deploy key: at ~/.ssh/id_ed25519 when generated; an operator\'s own beside it', () => {
    expect(deployKeyPath('/home/deploy', false)).toBe('/home/deploy/.ssh/id_ed25519')
    expect(deployKeyPath('/home/deploy/', true)).toBe('/home/deploy/.ssh/toogoodtogo_deploy_key')
  })

  it('ssh: the deploy key only, host key accepted on first use, never a prompt', () => {
    const ssh = gitSshCommand('/home/deploy/.ssh/id_ed25519')
    expect(ssh).toBe('ssh -i /home/deploy/.ssh/id_ed25519 -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new -o BatchMode=yes')
    expect(gitEnv(ssh)).toEqual({ GIT_TERMINAL_PROMPT: '0', GIT_SSH_COMMAND: ssh })
    expect(gitEnv()).toEqual({ GIT_TERMINAL_PROMPT: '0' })
  })

  it("why git could not read the repository: its reason, not the advice it prints after every failure", () => {
    const stderr = "Warning: Permanently added 'localhost' (ED25519) to the list of known hosts.\r\ngit@localhost: Permission denied (publickey).\nfatal: Could not read from remote repository.\n\nPlease make sure you have the correct access rights\nand the repository exists.\n"
    expect(gitFailureReason(stderr)).toBe("Warning: Permanently added 'localhost' (ED25519) to the list of known hosts. | git@localhost: Permission denied (publickey). | fatal: Could not read from remote repository.")
    expect(gitFailureReason('')).toBe('')
  })

  it('git never prompts: gitEnv sets GIT_TERMINAL_PROMPT=0, with or without an ssh command', () => {
    // (setup's own git lines pass gitEnv(): test/integration/setup-plan.test.ts)
    expect(gitEnv()).toMatchObject({ GIT_TERMINAL_PROMPT: '0' })
    expect(gitEnv('ssh -i /k')).toMatchObject({ GIT_TERMINAL_PROMPT: '0' })
  })

  it('the deploy user\'s account from getent passwd', () => {
    expect(parsePasswd('deploy:x:1000:1001::/home/deploy:/bin/bash\n')).toEqual({ user: 'deploy', group: '1001', home: '/home/deploy' })
    expect(parsePasswd('')).toBeNull()
  })
})
