// setup-droplet: turns a fresh Debian or Ubuntu droplet into the running production host (contract:
// setup-droplet.sh). Every step looks before it changes anything, so a run that failed halfway is
// simply run again; the completion marker, written last, makes a finished host exit 2 untouched.
// The steps are listed in setupDroplet, in order; the longer ones live in lib/setup/ (the
// repository, .env.production, TLS, the systemd units, the start and the first deployment).
import fs from 'node:fs'
import { flag, stringOption, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { detectCompose, probeCompose, type ComposeProject } from '../lib/commands/compose.ts'
import { stackProfiles, TOOLKIT_DIR } from '../lib/core/config.ts'
import { canPrompt, confirmDestructive } from '../lib/core/prompt.ts'
import type { Mode } from '../lib/core/deployment-config.ts'
import { OpsError } from '../lib/core/errors.ts'
import { isoSeconds } from '../lib/core/format.ts'
import { log } from '../lib/core/log.ts'
import { isEntryPoint, runMain } from '../lib/core/main.ts'
import { webhookProfileProblem } from '../lib/release/mode.ts'
import { looksTransient, retry } from '../lib/core/retry.ts'
import { $, $read, isDryRun } from '../lib/core/shell.ts'
import { loadSetupSettings, setupStateContent, setupStateFile, type SetupSettings } from '../lib/setup/settings.ts'
import { writeContainerEnvFiles } from '../lib/core/container-env.ts'
import { checkMonitoringAnswers, configureMonitoring, withMonitoringFlag } from '../lib/setup/monitoring.ts'
import { parsePasswd, type Account } from '../lib/commands/host.ts'
import { aptInstall, aptUpdate, aptUpgrade, COMPOSE_PACKAGES, dockerPackages, parseAptPolicy } from '../lib/commands/apt.ts'
import { firewallCommands, publishedPortProblems, ufwAdded } from '../lib/commands/ufw.ts'
import { systemctl } from '../lib/commands/systemd.ts'
import { lstatOrNull } from '../lib/core/no-follow.ts'
import { ensureDir, handOver } from '../lib/setup/hand-over.ts'
import { checkSshAccess, enableUnattendedUpgrades, hardenSsh } from '../lib/setup/hardening.ts'
import { isFileWithAccess } from '../lib/core/which.ts'
import { currentStep, step, type Plan } from '../lib/setup/plan.ts'
import { writeFile } from '../lib/setup/files.ts'
import { createSystemdService, installTsxCommand } from '../lib/setup/install-units.ts'
import { cloneRepository, isGitRepo } from '../lib/setup/repo-access.ts'
import { configureSsl, installNginxAndCertbot } from '../lib/setup/tls.ts'
import { checkAnswers, configureEnvironment, keptEnvFile } from '../lib/setup/env-collection.ts'
import { recordDeployment, registerTelegramWebhook, runHealthChecks, startServices, takeFirstBaseBackup } from '../lib/setup/first-deployment.ts'
import { setUpSwarm, swarmAction, type SwarmAction } from '../lib/setup/swarm.ts'

export const spec = {
  name: 'setup-droplet',
  summary: 'Configure a fresh droplet as the production host, once (run it again after a failure)',
  usage: 'setup-droplet [--env-file FILE] [--webhook [--self-signed|--staging]] [--monitoring] [--yes] [--dry-run]\n       setup-droplet --swarm init | --swarm join MANAGER [--dry-run]',
  positionals: [{ name: 'MANAGER', description: "with --swarm join: the manager's private IP address" }],
  maxPositionals: 1,
  options: {
    'env-file': { type: 'string', value: 'FILE', description: 'Answers for .env.production (KEY=VALUE, e.g. a filled-in copy of the template) instead of prompts' },
    webhook: { type: 'boolean', description: 'Webhook mode: nginx, TLS and ports 80/443 (also implied by TELEGRAM_WEBHOOK_URL)' },
    'self-signed': { type: 'boolean', description: 'Webhook mode on a host without a public name: a self-signed certificate instead of certbot' },
    staging: { type: 'boolean', description: "Webhook mode: certbot against Let's Encrypt's staging server (untrusted test certificates)" },
    monitoring: { type: 'boolean', description: 'Prometheus, Alertmanager and the exporters (compose), node_exporter on the host (also MONITORING_ENABLED=true)' },
    'no-ssh-hardening': { type: 'boolean', description: 'Leave sshd as it is (default: a drop-in turning password login off, root by key only; also SETUP_SSH_HARDENING=false)' },
    'no-unattended-upgrades': { type: 'boolean', description: 'Do not turn on unattended security upgrades (also SETUP_UNATTENDED_UPGRADES=false)' },
    swarm: { type: 'string', value: 'init|join', description: 'Only the Swarm step: make this droplet the first manager (init) or join MANAGER (join); see "More than one droplet" in the README' },
    yes: { type: 'boolean', short: 'y', description: 'Do not ask for confirmation (required when there is no terminal)' },
    'dry-run': { type: 'boolean', short: 'n', description: 'Print every command and file write that would happen; change nothing' },
  },
  exitCodes: [
    [0, 'Setup successful: the stack is running, healthy, and comes back at boot'],
    [1, 'Setup failed (the log says at which step); fix the cause and run it again'],
    [2, 'Already configured ($DEPLOY_DIR/.setup-complete exists); nothing was changed'],
  ],
  env: [
    ['DEPLOY_DIR', 'holds .env.production, the app checkout and this toolkit (/opt/toogoodtogo)'],
    ['APP_REPO_URL', 'the application repository to clone into APP_DIR ($DEPLOY_DIR/app), as the deploy user'],
    ['DEPLOY_KEY_FILE', 'ssh APP_REPO_URL: the private key to read it with (default: a key generated for the deploy user)'],
    ['APP_VERSION', 'release tag to start (default: the newest vX.Y.Z tag of the repository)'],
    ['BOT_IMAGE', 'image repository of the bot, without tag (asked when missing)'],
    ['DEPLOY_USER', 'non-root user that owns the files and runs the units (deploy)'],
    ['BACKUP_DIR, LOG_FILE', 'as for the other scripts (/opt/backups/postgres, /var/log/toogoodtogo/deployment.log)'],
    ['COMPOSE_PROJECT_NAME', 'the stack (toogoodtogo)'],
    ['MIGRATE_COMMAND', 'the first migration, run in the bot image (alembic upgrade head)'],
    ['SSH_PORT', 'the port ufw keeps open for SSH (22)'],
    ['CERTBOT_EMAIL', "Let's Encrypt account e-mail (optional)"],
    ['SETUP_DOCKER_PACKAGES', 'packages for Docker (default: docker.io and the Compose package apt offers)'],
    ['SETUP_WEBHOOK_PACKAGES', 'webhook mode packages (certbot; nginx runs as the compose service)'],
    ['SETUP_EXTRA_PACKAGES', 'more packages to install with the base ones'],
    ['SETUP_SSH_HARDENING', 'false: leave sshd as it is (as --no-ssh-hardening); true by default, refused while root has no authorized key'],
    ['SETUP_UNATTENDED_UPGRADES', 'false: no unattended security upgrades (as --no-unattended-upgrades)'],
    ['ALERT_WEBHOOK_URL', 'monitoring: the Slack-compatible webhook Alertmanager posts to (default NOTIFY_WEBHOOK_URL); written to a file, mode 600'],
    ['TELEGRAM_BOT_TOKEN, ...', 'any key of deployment/.env.production.template: answers its prompt'],
    ['TELEGRAM_API_BASE', "the Bot API webhook mode's setWebhook goes to (https://api.telegram.org)"],
    ['SWARM_PEERS', '--swarm: every droplet\'s private IP (comma separated): the only sources ufw lets reach 2377/tcp, 7946/tcp+udp, 4789/udp'],
    ['SWARM_ADVERTISE_ADDR', '--swarm: the address the other droplets reach this one at (default: its address on the peers\' subnet)'],
    ['SWARM_JOIN_TOKEN', '--swarm join: `docker swarm join-token -q worker` on the manager (default: asked without echo)'],
  ],
  notes: [
    'Steps: check the marker, update packages, Docker, (webhook) certbot, ufw, sshd (keys only) and',
    'unattended security upgrades (each unless opted out), the deploy user and',
    'directories, clone, .env.production, (monitoring) node_exporter, its ufw rule and the alert webhook',
    'URL file, (webhook) TLS, systemd units, start, health check, (webhook)',
    "Telegram's webhook set through TELEGRAM_API_BASE, marker.",
    'On a terminal it asks for the bot token, the webhook URL and domain (webhook mode), the PostgreSQL',
    'password (empty: generated) and the Stripe key; secrets are not echoed and never logged. Without a',
    'terminal every answer must come from the environment or --env-file. An existing .env.production is',
    'kept as it is (its password already initialised the database): answers that differ from it are',
    'named, never applied; only APP_VERSION, the release to start, is updated in it, as deploy does.',
    'The deploy user clones and fetches the application with its own access: for an ssh APP_REPO_URL a',
    'deploy key (generated, or DEPLOY_KEY_FILE) whose public half must be added to the repository.',
    'Run directly with tsx, put -- before the options: tsx scripts/setup-droplet.ts -- --env-file FILE',
    '(node itself reads --env-file anywhere on its command line).',
  ],
  examples: [
    'sudo ./setup-droplet.sh',
    'sudo APP_REPO_URL=git@github.com:team/bot.git BOT_IMAGE=ghcr.io/team/bot ./setup-droplet.sh',
    'sudo ./setup-droplet.sh --env-file /root/answers.env --yes',
    'sudo ./setup-droplet.sh --webhook --staging',
    'sudo ALERT_WEBHOOK_URL=https://hooks.slack.com/services/... ./setup-droplet.sh --monitoring',
    'sudo ./setup-droplet.sh --dry-run',
    'sudo SWARM_PEERS=10.114.0.2,10.114.0.3 ./setup-droplet.sh --swarm init',
    'sudo SWARM_PEERS=10.114.0.2,10.114.0.3 ./setup-droplet.sh --swarm join 10.114.0.2',
  ],
} satisfies CliSpec

/** The command's options, as its flags give them. */
export interface SetupOptions {
  /** answers for .env.production (KEY=VALUE) instead of prompts */
  envFile: string | undefined
  webhook: boolean
  selfSigned: boolean
  staging: boolean
  /** MONITORING_ENABLED=true for this run */
  monitoring: boolean
  /** false: --no-ssh-hardening */
  sshHardening: boolean
  /** false: --no-unattended-upgrades */
  unattendedUpgrades: boolean
  yes: boolean
  swarm: SwarmAction | null
}

export type SetupOutcome = 'configured' | 'already_configured'

// The CLI, when this file is the one node started; a test imports the command without running it.
if (isEntryPoint(import.meta.url)) {
  await runMain(spec, { exitCodes: {}, failureLine: () => `Setup failed at: ${currentStep()}. Fix the cause and run setup-droplet again; finished steps are checked and skipped` }, async (cli) => {
    if ((await setupDroplet(setupOptions(cli))) === 'already_configured') process.exitCode = 2
  })
}

/** The contract's steps in order, each handing what it learns to the steps that need it. */
export async function setupDroplet(opts: SetupOptions): Promise<SetupOutcome> {
  step('Starting droplet setup')
  if (opts.swarm) {
    step('Setting up the Swarm')
    return setUpSwarm(opts.swarm).then(() => 'configured')
  }
  const s = loadSetupSettings(withMonitoringFlag(process.env, opts.monitoring), opts.envFile)
  if (alreadyConfigured(s)) return 'already_configured'
  const plan = await preflight(s, opts)
  await confirm(plan)
  await updateSystemPackages(s)
  const compose = await installDocker(plan)
  await installNginxAndCertbot(plan)
  await configureFirewall(plan)
  await hardenHost(plan)
  const account = await createApplicationDirectories(s)
  const version = await cloneRepository(plan, account)
  const env = await configureEnvironment(plan, version)
  writeContainerEnvFiles(s.cfg.envFile, process.env, (process.env.PITR_ENABLED || env.PITR_ENABLED) === 'true')
  const stack = await setUpMonitoring(plan, env, compose, account)
  await configureSsl(plan, env, stack)
  await createSystemdService(s, stack)
  installTsxCommand()
  const event = await startServices(s, stack, version)
  const ctx = await runHealthChecks(plan, version)
  await registerTelegramWebhook(plan, ctx, account)
  await recordDeployment(s, { account, version, event, ctx })
  await takeFirstBaseBackup(ctx, account)
  await writeCompletionMarker(plan, account, version)
  step('Setup complete - system ready for production')
  return 'configured'
}

export function setupOptions(cli: ParsedCli<typeof spec>): SetupOptions {
  return { envFile: stringOption(cli, 'env-file'), webhook: flag(cli, 'webhook'), selfSigned: flag(cli, 'self-signed'), staging: flag(cli, 'staging'), monitoring: flag(cli, 'monitoring'), sshHardening: !flag(cli, 'no-ssh-hardening'), unattendedUpgrades: !flag(cli, 'no-unattended-upgrades'), yes: flag(cli, 'yes'), swarm: swarmAction(stringOption(cli, 'swarm'), cli.positionals) }
}

// ---- 1. already configured? -------------------------------------------------------------------

function alreadyConfigured(s: SetupSettings): boolean {
  step('Checking existing configuration')
  if (fs.existsSync(s.markerFile)) {
    const at = markerTime(s.markerFile)
    log.info(`Existing configuration found: ${s.markerFile}${at ? ` (setup completed ${at})` : ''}; nothing was changed`)
    log.info(`To run setup again anyway, remove ${s.markerFile}`)
    return true
  }
  if (keptEnvFile(s)) log.info(`No existing configuration found (setup completed here before: ${s.cfg.envFile} is kept)`)
  else if (fs.existsSync(s.cfg.envFile)) log.info(`No existing configuration found (an earlier run stopped before the end: this run's answers replace its ${s.cfg.envFile}, but for what it already initialised)`)
  else log.info('No existing configuration found')
  return false
}

function markerTime(file: string): string | null {
  try {
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { completed_at?: string }).completed_at ?? null
  } catch {
    return null
  }
}

// ---- before changing anything ------------------------------------------------------------------

/** Everything that can be known wrong before the first change: root, mode, missing or bad answers. */
async function preflight(s: SetupSettings, opts: SetupOptions): Promise<Plan> {
  if (process.getuid?.() !== 0 && !isDryRun()) {
    throw new OpsError('config', 'setup-droplet must run as root (sudo ./setup-droplet.sh): it installs packages, configures the firewall and writes systemd units')
  }
  const existing = keptEnvFile(s)
  const urlGiven = existing ? existing.TELEGRAM_WEBHOOK_URL : s.input.TELEGRAM_WEBHOOK_URL
  if (existing && opts.webhook && !existing.TELEGRAM_WEBHOOK_URL) {
    throw new OpsError('config', `--webhook, but ${s.cfg.envFile} (kept from an earlier run) has no TELEGRAM_WEBHOOK_URL: set it there, or run without --webhook`)
  }
  const mode: Mode = opts.webhook || urlGiven ? 'webhook' : 'polling'
  const contradiction = webhookProfileProblem(s.cfg.COMPOSE_PROFILES, mode === 'webhook', s.cfg.envFile)
  if (contradiction) throw new OpsError('config', contradiction)
  if ((opts.selfSigned || opts.staging) && mode !== 'webhook') throw new OpsError('usage', '--self-signed and --staging apply to webhook mode only (--webhook or TELEGRAM_WEBHOOK_URL)')
  if (opts.selfSigned && opts.staging) throw new OpsError('usage', '--self-signed and --staging exclude each other')
  log.info(`Mode: ${mode === 'webhook' ? 'webhook (nginx with TLS on ports 80 and 443)' : 'long polling (outbound only, no public ingress)'}`)
  const sshHardening = opts.sshHardening && s.SETUP_SSH_HARDENING && (await checkSshAccess(process.env.SUDO_USER))
  const plan: Plan = {
    s, mode, selfSigned: opts.selfSigned, staging: opts.staging, assumeYes: opts.yes, requestedVersion: s.input.APP_VERSION ?? existing?.APP_VERSION ?? null,
    sshHardening, unattendedUpgrades: opts.unattendedUpgrades && s.SETUP_UNATTENDED_UPGRADES,
  }
  if (!existing) checkAnswers(plan)
  checkMonitoringAnswers(s.input, existing ?? {}, s.cfg)
  if (s.DEPLOY_KEY_FILE && !isFileWithAccess(s.DEPLOY_KEY_FILE, fs.constants.R_OK)) throw new OpsError('config', `DEPLOY_KEY_FILE ${s.DEPLOY_KEY_FILE} is not a readable file. Nothing was changed`)
  if (!s.APP_REPO_URL && !isGitRepo(s.appDir) && !canPrompt()) {
    throw new OpsError('config', `APP_REPO_URL is not set and ${s.appDir} is not a clone yet: set APP_REPO_URL (or run on a terminal to be asked)`)
  }
  return plan
}

async function confirm(plan: Plan): Promise<void> {
  if (isDryRun()) return
  const { s } = plan
  const ports = plan.mode === 'webhook' ? `${s.SSH_PORT}, 80 and 443` : `${s.SSH_PORT} (SSH) only`
  await confirmDestructive(
    `This configures this machine as the production host: it upgrades all packages, installs Docker, enables the firewall (incoming: port ${ports}), creates user ${s.DEPLOY_USER}, and writes ${s.cfg.DEPLOY_DIR}, ${s.cfg.BACKUP_DIR} and systemd units.`,
    plan.assumeYes,
  )
}

// ---- 2. packages -------------------------------------------------------------------------------

async function updateSystemPackages(s: SetupSettings): Promise<void> {
  step('Updating system packages')
  await retry(() => aptUpdate(), { isTransient: looksTransient, what: 'apt-get update' })
  await aptUpgrade()
  const packages = [...s.SETUP_BASE_PACKAGES, ...s.SETUP_EXTRA_PACKAGES]
  log.info(`Installing ${packages.join(' ')}`)
  await retry(() => aptInstall(packages), { isTransient: looksTransient, what: 'apt-get install' })
}

// ---- 3. Docker ---------------------------------------------------------------------------------

/** Docker and Compose, installed unless they already work; returns the stack as Compose drives it. */
async function installDocker(plan: Plan): Promise<ComposeProject> {
  step('Installing Docker')
  const { s } = plan
  const engine = await $read({ nothrow: true, timeoutMs: 30_000 })`docker info --format {{.ServerVersion}}`
  const compose = await probeCompose()
  if (engine.exitCode === 0 && compose) {
    log.info(`Docker ${engine.stdout.trim()} with Compose ${compose} already works; not installing it`)
  } else {
    const packages = s.SETUP_DOCKER_PACKAGES.length ? s.SETUP_DOCKER_PACKAGES : dockerPackages(parseAptPolicy((await $read({ nothrow: true })`apt-cache policy ${COMPOSE_PACKAGES}`).stdout))
    log.info(`Installing ${packages.join(' ')}`)
    await retry(() => aptInstall(packages), { isTransient: looksTransient, what: 'apt-get install' })
    await systemctl('enable', '--now', 'docker.service')
  }
  // Packages create the group; an engine installed some other way may not have.
  if ((await $read({ nothrow: true })`getent group docker`).exitCode !== 0) await $`groupadd --system docker`
  // .env.production by name even before it exists: every compose command runs after it is written.
  return {
    flavor: await detectCompose(s.cfg.COMPOSE_CLI), files: s.cfg.composeFiles, project: s.cfg.COMPOSE_PROJECT_NAME, envFile: s.cfg.envFile,
    profiles: stackProfiles(s.cfg.COMPOSE_PROFILES, { webhook: plan.mode === 'webhook', monitoring: s.cfg.MONITORING_ENABLED }),
  }
}

// ---- 5. firewall -------------------------------------------------------------------------------

async function configureFirewall(plan: Plan): Promise<void> {
  step('Configuring firewall')
  const { s } = plan
  const problems = publishedPortProblems(fs.readFileSync(s.cfg.composeFile, 'utf8'))
  if (problems.length) {
    throw new OpsError('config', `${s.cfg.composeFile} publishes ports that ufw cannot filter (Docker opens them ahead of the firewall): ${problems.join('; ')}. Only nginx may publish, 80 and 443`)
  }
  for (const argv of firewallCommands(await ufwAdded(), { webhook: plan.mode === 'webhook', sshPort: s.SSH_PORT })) await $({ timeoutMs: 60_000 })`${argv}`
  log.info(`Firewall: incoming denied except ${s.SSH_PORT}/tcp (SSH)${plan.mode === 'webhook' ? ', 80/tcp and 443/tcp' : ''}`)
}

// ---- 5b. sshd and security updates (lib/setup/hardening.ts) --------------------------------------

async function hardenHost(plan: Plan): Promise<void> {
  if (plan.sshHardening) {
    step('Hardening SSH')
    await hardenSsh()
  } else {
    log.info('SSH: left as it is (--no-ssh-hardening, SETUP_SSH_HARDENING=false, or no SSH server installed)')
  }
  if (plan.unattendedUpgrades) {
    step('Enabling unattended security upgrades')
    await enableUnattendedUpgrades()
  } else {
    log.info('Unattended upgrades: left as they are (--no-unattended-upgrades or SETUP_UNATTENDED_UPGRADES=false)')
  }
}

// ---- 6. deploy user and directories ------------------------------------------------------------

/** The deploy user (in the docker group) and the directories it owns; returns its account. */
async function createApplicationDirectories(s: SetupSettings): Promise<Account> {
  step('Creating application directories')
  const user = s.DEPLOY_USER
  if ((await $read({ nothrow: true })`id -u ${user}`).exitCode !== 0) {
    log.info(`Creating user ${user}`)
    // A login user (operators `sudo -iu deploy` to run deploys) with no password: it cannot log in by one.
    await $`useradd --create-home --shell /bin/bash --user-group ${user}`
  }
  const groups = (await $read({ nothrow: true })`id -nG ${user}`).stdout.trim().split(/\s+/)
  if (!groups.includes('docker')) await $`usermod --append --groups docker ${user}`
  // The deploy user runs the units and the scripts, so it owns what they write; nobody else reads
  // backups (they hold every row) or the logs.
  await ensureDir(s.cfg.DEPLOY_DIR, 0o750, user)
  await ensureDir(s.cfg.BACKUP_DIR, 0o700, user)
  await ensureDir(s.logDir, 0o750, user)
  // This run's own lines created the log file as root (a link planted there was refused).
  if (lstatOrNull(s.cfg.LOG_FILE)) await handOver(user, s.cfg.LOG_FILE, 0o640)
  return deployAccount(user)
}

/** The deploy user's uid, group and home; in a dry run on a fresh host, what useradd would make. */
async function deployAccount(user: string): Promise<Account> {
  const entry = parsePasswd((await $read({ nothrow: true })`getent passwd ${user}`).stdout)
  if (entry) return entry
  if (isDryRun()) return { user, group: user, home: `/home/${user}` }
  throw new OpsError('config', `User ${user} has no passwd entry (getent passwd ${user})`)
}

// ---- 8b. monitoring (optional) ------------------------------------------------------------------

/**
 * On (--monitoring, MONITORING_ENABLED given or kept): node_exporter on the host, its firewall
 * rule, Alertmanager's webhook URL file and .env.production's monitoring keys
 * (lib/setup/monitoring.ts). Returns the stack every later compose command names.
 */
async function setUpMonitoring(plan: Plan, env: Record<string, string>, compose: ComposeProject, account: Account): Promise<ComposeProject> {
  step('Configuring monitoring')
  const { s } = plan
  return configureMonitoring({ given: s.input, envFile: s.cfg.envFile, env, cfg: s.cfg, deployUser: account.user, compose })
}

// ---- 14. marker --------------------------------------------------------------------------------

async function writeCompletionMarker(plan: Plan, account: Account, version: string): Promise<void> {
  const { s } = plan
  const marker = { completed_at: isoSeconds(new Date()), mode: plan.mode, app_version: version, compose_project: s.cfg.COMPOSE_PROJECT_NAME, toolkit_dir: TOOLKIT_DIR }
  writeFile(s.markerFile, JSON.stringify(marker, null, 2) + '\n', 0o644)
  // Kept when the marker is removed to run setup again: .env.production is the operator's from now on.
  const state = setupStateFile(s.cfg.DEPLOY_DIR)
  if (!fs.existsSync(state)) writeFile(state, setupStateContent(marker.completed_at), 0o644)
  // Everything in DEPLOY_DIR but the toolkit checkout belongs to the deploy user.
  await handOver(account.user, s.markerFile, 0o644)
  await handOver(account.user, state, 0o644)
}
