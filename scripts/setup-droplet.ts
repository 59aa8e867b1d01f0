// setup-droplet: turns a fresh Debian or Ubuntu droplet into the running production host (contract:
// setup-droplet.sh). Every step looks before it changes anything, so a run that failed halfway is
// simply run again; the completion marker, written last, makes a finished host exit 2 untouched.
import { randomInt } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { flag, stringOption, withoutSeparator, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { composePull, composeStart, composeStop, composeUp, detectCompose, firstMigration, probeCompose, type ComposeProject } from '../lib/commands/compose.ts'
import { type Context, loadConfig, openContext, stackProfiles, TOOLKIT_DIR } from '../lib/core/config.ts'
import { ask, canPrompt, confirmDestructive } from '../lib/core/prompt.ts'
import { appendEvent, completeEvent, newEvent, readState, writeState, type DeployEvent } from '../lib/release/deploy-state.ts'
import {
  assertValid,
  composeDatabaseUrl,
  describeProblems,
  optionalKeys,
  renderEnvFile,
  RULES,
  templateKeys,
  validateDeploymentConfig,
  type Mode,
} from '../lib/core/deployment-config.ts'
import { parseEnvFile, readEnvFile, setEnvValue } from '../lib/core/env-file.ts'
import { messageOf, OpsError } from '../lib/core/errors.ts'
import { isoSeconds } from '../lib/core/format.ts'
import { SERVICES, waitUntilHealthy } from '../lib/release/health.ts'
import { log } from '../lib/core/log.ts'
import { isEntryPoint, runMain } from '../lib/core/main.ts'
import { addSecretsFrom } from '../lib/core/redact.ts'
import { artifactFor, schemaRevision } from '../lib/release/release.ts'
import { registerWebhook, webhookProfileProblem } from '../lib/release/mode.ts'
import { webhookStateFile } from '../lib/release/webhook.ts'
import { looksTransient, retry } from '../lib/core/retry.ts'
import { capture, isDryRun, run, tryRun } from '../lib/core/runner.ts'
import { TSX_COMMAND, TSX_MARK, tsxWrapper } from '../lib/setup/tsx-command.ts'
import { changedAnswers, initialisedValues, loadSetupSettings, setupEverCompleted, setupStateContent, setupStateFile, withoutOffsite, type SetupSettings } from '../lib/setup/settings.ts'
import { collectPitr, firstBaseBackup, preparePostgres } from '../lib/setup/pitr.ts'
import { APP_ROLE, prepareAppRole } from '../lib/db/app-role.ts'
import { writeContainerEnvFiles } from '../lib/core/container-env.ts'
import { checkMonitoringAnswers, collectMonitoring, configureMonitoring, startHealthMetrics, withMonitoringFlag } from '../lib/setup/monitoring.ts'
import { defaultIdentityFile, generateKeyPair, identityFileContent, identityNotice } from '../lib/setup/offsite.ts'
import { recipientsOf } from '../lib/offsite/identity.ts'
import { isAgeRecipient, offsiteSettings } from '../lib/offsite/settings.ts'
import { addGitSafeDirectory, gitCheckout, gitClone, gitConfigGet, gitConfigSet, gitFailureReason, gitFetch, gitLsRemote, gitRemoteUrl, gitResolve, gitSafeDirectories, gitSshCommand, gitTags, isSshUrl, sshHost } from '../lib/commands/git.ts'
import { addToGroup, asUser, certbotCertonly, certificatePaths, createSystemGroup, createUser, DEFAULT_LETSENCRYPT_DIR, deployKeyPath, groupExists, installDir, move, newestReleaseTag, parsePasswd, passwdEntry, removeTree, selfSignedCertificate, shellLine, sshKeygen, sshPublicKey, userExists, userGroups, type Account } from '../lib/setup/host.ts'
import { aptInstall, aptPolicy, aptUpdate, aptUpgrade, COMPOSE_PACKAGES, dockerPackages, parseAptPolicy } from '../lib/commands/apt.ts'
import { dockerInfo } from '../lib/commands/docker.ts'
import { firewallCommands, parseUfwAdded, publishedPortProblems, ufwShowAdded } from '../lib/commands/ufw.ts'
import { BACKUP_TIMER, DRILL_TIMER, ENABLED_UNITS, LOGROTATE_FILE, renderUnits, STACK_UNIT } from '../lib/setup/units.ts'
import { systemctl, unitWarnings, verifyLogrotate, verifyUnits } from '../lib/commands/systemd.ts'
import { writeFileAtomic } from '../lib/core/atomic-file.ts'
import { lstatOrNull, setOwnerAndMode } from '../lib/core/no-follow.ts'
import { ensureDir, handOver, installFileAs } from '../lib/setup/hand-over.ts'
import { checkSshAccess, enableUnattendedUpgrades, hardenSsh } from '../lib/setup/hardening.ts'
import { isFileWithAccess } from '../lib/core/which.ts'
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

/** What preflight settles before the first change; the steps after it read it, none changes it. */
interface Plan {
  readonly s: SetupSettings
  readonly mode: Mode
  readonly selfSigned: boolean
  readonly staging: boolean
  readonly assumeYes: boolean
  /** harden sshd: on, not opted out, and a key keeps the operator's way in (checked in preflight) */
  readonly sshHardening: boolean
  readonly unattendedUpgrades: boolean
  /** APP_VERSION as given or kept in .env.production; null: the newest release tag, known once cloned */
  readonly requestedVersion: string | null
}

// The contract's "Service startup wait: 5 minutes".
const STARTUP_WAIT_MS = 5 * 60_000
/** A dry run on a fresh host cannot know the newest tag before the clone it only describes. */
const UNKNOWN_TAG = 'NEWEST_RELEASE_TAG'
const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'
let currentStep = 'Starting droplet setup'

// The CLI, when this file is the one node started; a test imports the command without running it.
if (isEntryPoint(import.meta.url)) {
  await runMain(spec, { exitCodes: {}, failureLine: () => `Setup failed at: ${currentStep}. Fix the cause and run setup-droplet again; finished steps are checked and skipped` }, async (cli) => {
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

function step(line: string): void {
  currentStep = line
  log.info(line)
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

/** .env.production once setup has completed here: the operator's from then on. Before that, null: the answers write it. */
function keptEnvFile(s: SetupSettings): Record<string, string> | null {
  return setupEverCompleted(s.cfg.DEPLOY_DIR, s.markerFile, s.cfg.ARTIFACTS_FILE) ? readEnvFile(s.cfg.envFile) : null
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

/** Given answers must be valid; missing ones must be askable. Nothing has been changed yet. */
function checkAnswers(plan: Plan): void {
  const given = answersForEnvFile(plan.s)
  const problems = validateDeploymentConfig(given, plan.mode).filter((p) => p.message !== 'is missing' && given[p.key] !== undefined)
  if (problems.length) throw new OpsError('config', describeProblems('the answers given', problems))
  const missing = promptedKeys(plan).filter((key) => !given[key])
  if (missing.length && !canPrompt()) {
    throw new OpsError('config', `Missing ${missing.join(', ')}: set ${missing.length > 1 ? 'them' : 'it'} in the environment or in --env-file FILE, or run on a terminal to be asked. Nothing was changed`)
  }
  // Off-site answers given without a terminal to complete them must be whole now; the key pair
  // may still be generated later (any valid recipient stands in for it here).
  // (a function-scoped constant: the top-level await above runs this before module constants below exist)
  const placeholderRecipient = 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p'
  if (given.OFFSITE_S3_BUCKET && !canPrompt()) offsiteSettings({ BACKUP_AGE_RECIPIENT: placeholderRecipient, ...given })
}

/** The answers the operator must give (the contract's prompts, plus the image to run). */
function promptedKeys(plan: Plan): string[] {
  const webhook = plan.mode === 'webhook'
  return [
    'TELEGRAM_BOT_TOKEN',
    ...(webhook ? ['TELEGRAM_WEBHOOK_URL'] : []),
    'STRIPE_API_KEY',
    ...(webhook && !plan.s.input.TELEGRAM_WEBHOOK_URL ? ['DOMAIN'] : []),
    'BOT_IMAGE',
  ]
}

/** The given values of keys the template names (or lists as optional overrides). */
function answersForEnvFile(s: SetupSettings): Record<string, string> {
  const template = fs.readFileSync(templateFile(), 'utf8')
  const keys = new Set([...templateKeys(template), ...optionalKeys(template), 'COMPOSE_PROJECT_NAME'])
  return Object.fromEntries(Object.entries(s.input).filter(([key]) => keys.has(key)))
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
  await retry(() => run(aptUpdate()), { isTransient: looksTransient, what: 'apt-get update' })
  await run(aptUpgrade())
  const packages = [...s.SETUP_BASE_PACKAGES, ...s.SETUP_EXTRA_PACKAGES]
  log.info(`Installing ${packages.join(' ')}`)
  await retry(() => run(aptInstall(packages)), { isTransient: looksTransient, what: 'apt-get install' })
}

// ---- 3. Docker ---------------------------------------------------------------------------------

/** Docker and Compose, installed unless they already work; returns the stack as Compose drives it. */
async function installDocker(plan: Plan): Promise<ComposeProject> {
  step('Installing Docker')
  const { s } = plan
  const engine = await tryRun(dockerInfo()).catch(() => null)
  const compose = await probeCompose()
  if (engine?.exitCode === 0 && compose) {
    log.info(`Docker ${engine.stdout.trim()} with Compose ${compose} already works; not installing it`)
  } else {
    const packages = s.SETUP_DOCKER_PACKAGES.length ? s.SETUP_DOCKER_PACKAGES : dockerPackages(parseAptPolicy((await tryRun(aptPolicy([...COMPOSE_PACKAGES]))).stdout))
    log.info(`Installing ${packages.join(' ')}`)
    await retry(() => run(aptInstall(packages)), { isTransient: looksTransient, what: 'apt-get install' })
    await run(systemctl('enable', '--now', 'docker.service'))
  }
  // Packages create the group; an engine installed some other way may not have.
  if ((await tryRun(groupExists('docker'))).exitCode !== 0) await run(createSystemGroup('docker'))
  // .env.production by name even before it exists: every compose command runs after it is written.
  return {
    flavor: await detectCompose(s.cfg.COMPOSE_CLI), files: s.cfg.composeFiles, project: s.cfg.COMPOSE_PROJECT_NAME, envFile: s.cfg.envFile,
    profiles: stackProfiles(s.cfg.COMPOSE_PROFILES, { webhook: plan.mode === 'webhook', monitoring: s.cfg.MONITORING_ENABLED }),
  }
}

// ---- 4. nginx and certbot (webhook mode) -------------------------------------------------------

async function installNginxAndCertbot(plan: Plan): Promise<void> {
  if (plan.mode === 'polling') {
    step('Skipping nginx and certbot: polling mode has no public ingress')
    return
  }
  step('Installing nginx and certbot')
  // nginx is the stack's own `nginx` service (webhook profile), so the host needs no nginx
  // package, which would only take ports 80 and 443 from it.
  const packages = plan.selfSigned ? [] : plan.s.SETUP_WEBHOOK_PACKAGES
  if (packages.length === 0) {
    log.info('nginx runs as the compose service; with --self-signed no certbot is needed')
    return
  }
  log.info(`nginx runs as the compose service; installing ${packages.join(' ')}`)
  await retry(() => run(aptInstall(packages)), { isTransient: looksTransient, what: 'apt-get install' })
}

// ---- 5. firewall -------------------------------------------------------------------------------

async function configureFirewall(plan: Plan): Promise<void> {
  step('Configuring firewall')
  const { s } = plan
  const problems = publishedPortProblems(fs.readFileSync(s.cfg.composeFile, 'utf8'))
  if (problems.length) {
    throw new OpsError('config', `${s.cfg.composeFile} publishes ports that ufw cannot filter (Docker opens them ahead of the firewall): ${problems.join('; ')}. Only nginx may publish, 80 and 443`)
  }
  const added = parseUfwAdded((await tryRun(ufwShowAdded()).catch(() => ({ stdout: '' }))).stdout)
  for (const command of firewallCommands(added, { webhook: plan.mode === 'webhook', sshPort: s.SSH_PORT })) await run(command)
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
  if ((await tryRun(userExists(user))).exitCode !== 0) {
    log.info(`Creating user ${user}`)
    await run(createUser(user))
  }
  const groups = (await tryRun(userGroups(user))).stdout.trim().split(/\s+/)
  if (!groups.includes('docker')) await run(addToGroup(user, 'docker'))
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
  const entry = parsePasswd((await tryRun(passwdEntry(user)).catch(() => ({ stdout: '' }))).stdout)
  if (entry) return entry
  if (isDryRun()) return { user, group: user, home: `/home/${user}` }
  throw new OpsError('config', `User ${user} has no passwd entry (getent passwd ${user})`)
}

// ---- 7. application repository ----------------------------------------------------------------

// The deploy user clones and, later, deploy fetches as that user: the repository must be readable
// with the deploy user's own access, never with root's credentials. Returns the release to start.
async function cloneRepository(plan: Plan, account: Account): Promise<string> {
  step('Cloning repository')
  const { s } = plan
  const dir = s.appDir
  let version = plan.requestedVersion
  let sshCommand: string | null
  if (isGitRepo(dir)) {
    const origin = (await tryRun(asUser(account, gitRemoteUrl(dir)))).stdout.trim()
    if (s.APP_REPO_URL && origin !== s.APP_REPO_URL) log.warn(`${dir} is a clone of ${origin}, not of APP_REPO_URL ${s.APP_REPO_URL}; keeping it`)
    else log.info(`Repository already cloned at ${dir}`)
    sshCommand = await repositoryAccess(s, account, origin)
    // A clone made before the deploy key (or with another one): deploy's fetch must use this key.
    if (sshCommand && (await tryRun(asUser(account, gitConfigGet(dir, 'core.sshCommand')))).stdout.trim() !== sshCommand) {
      await run(asUser(account, gitConfigSet(dir, 'core.sshCommand', sshCommand)))
    }
  } else {
    if (fs.existsSync(dir) && fs.readdirSync(dir).length > 0) throw new OpsError('config', `${dir} exists, is not empty and is not a git clone: move it away or set APP_DIR`)
    const url = s.APP_REPO_URL ?? (await ask('Enter the application Git repository URL'))
    sshCommand = await repositoryAccess(s, account, url)
    log.info(`Cloning ${url} into ${dir} as ${account.user}`)
    // Cloned beside its place and moved in whole: an interrupted clone never looks like a clone.
    const partial = `${dir}.partial`
    if (fs.existsSync(partial)) await run(removeTree(partial))
    await retry(() => run(asUser(account, gitClone(url, partial, sshCommand))), { isTransient: looksTransient, what: 'git clone' })
    version ??= await newestTag(account, partial, url)
    log.info(`Checking out ${version}`)
    await run(asUser(account, gitCheckout(partial, version)))
    await run(move(partial, dir))
  }
  version ??= await newestTag(account, dir, dir)
  await checkoutVersion(account, { dir, version, sshCommand })
  const safe = (await tryRun(gitSafeDirectories())).stdout.split('\n').map((l) => l.trim())
  if (!safe.includes(dir)) await run(addGitSafeDirectory(dir))
  return version
}

/**
 * An existing clone is moved to the release this run starts (APP_VERSION changed since the run
 * that cloned it), fetching first when it does not know that tag yet; a clone already there is
 * left untouched (a checkout would still rewrite its index).
 */
async function checkoutVersion(account: Account, { dir, version, sshCommand }: { dir: string; version: string; sshCommand: string | null }): Promise<void> {
  if (isDryRun() && !isGitRepo(dir)) return
  const commit = async (ref: string) => (await tryRun(asUser(account, gitResolve(dir, ref)))).stdout.trim()
  let wanted = await commit(version)
  if (!wanted) {
    await retry(() => run(asUser(account, gitFetch(dir, sshCommand))), { isTransient: looksTransient, what: 'git fetch' })
    wanted = await commit(version)
    if (!wanted && !isDryRun()) throw new OpsError('config', `${dir} has no tag or commit ${version} (after git fetch): set APP_VERSION to a release of the repository`)
  }
  if (wanted && wanted === (await commit('HEAD'))) return
  log.info(`Checking out ${version} in ${dir}`)
  await run(asUser(account, gitCheckout(dir, version)))
}

function isGitRepo(dir: string): boolean {
  return fs.existsSync(path.join(dir, '.git'))
}

async function newestTag(account: Account, dir: string, what: string): Promise<string> {
  if (isDryRun() && !fs.existsSync(dir)) return UNKNOWN_TAG
  const tag = newestReleaseTag(await capture(asUser(account, gitTags(dir))))
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
async function repositoryAccess(s: SetupSettings, account: Account, url: string): Promise<string | null> {
  if (!isSshUrl(url)) return null
  const key = deployKeyPath(account.home, Boolean(s.DEPLOY_KEY_FILE))
  await ensureDir(path.dirname(key), 0o700, account.user)
  if (s.DEPLOY_KEY_FILE) {
    if (!sameContent(s.DEPLOY_KEY_FILE, key)) {
      log.info(`Installing the deploy key ${s.DEPLOY_KEY_FILE} for ${account.user} as ${key}`)
      await installFileAs(s.DEPLOY_KEY_FILE, key, 0o600, account.user)
    }
  } else if (!fs.existsSync(key)) {
    log.info(`Creating an SSH deploy key for ${account.user}: ${key}`)
    await run(asUser(account, sshKeygen(key, `${account.user}@${os.hostname()} toogoodtogo deploy key`)))
  }
  const ssh = gitSshCommand(key)
  if (isDryRun()) {
    log.info(`[dry-run] would check that ${account.user} can read ${url} with ${key}`)
    return ssh
  }
  let shown = false
  for (;;) {
    const probe = await tryRun(asUser(account, gitLsRemote(url, ssh)))
    if (probe.exitCode === 0) {
      log.info(`${account.user} can read ${url} with its deploy key ${key}`)
      return ssh
    }
    const why = gitFailureReason(probe.stderr) || `git ls-remote exit code ${probe.exitCode}`
    log.warn(`${account.user} cannot read ${url} yet: ${why}`)
    if (!shown) {
      const publicKey = (await tryRun(asUser(account, sshPublicKey(key)))).stdout.trim()
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

// ---- 8. .env.production ------------------------------------------------------------------------

/** .env.production: kept when an earlier run wrote it, else from the answers; returns its values. */
async function configureEnvironment(plan: Plan, version: string): Promise<Record<string, string>> {
  step('Configuring environment variables')
  const file = plan.s.cfg.envFile
  const existing = keptEnvFile(plan.s)
  let env: Record<string, string>
  if (existing) {
    // Kept as it is, never regenerated: its POSTGRES_PASSWORD already initialised the database
    // volume, and a new one would lock the bot out. An operator who fixed an answer and ran again
    // must hear that the fix went nowhere, and which one (names only: the values are secrets).
    assertValid(file, existing, plan.mode)
    log.info(`Keeping ${file} from an earlier run: it is not rewritten from this run's answers (its POSTGRES_PASSWORD already initialised the database)`)
    // MONITORING_ENABLED (--monitoring) is applied to the kept file by setUpMonitoring.
    const differing = changedAnswers(answersForEnvFile(plan.s), existing, ['APP_VERSION', 'MONITORING_ENABLED'])
    if (differing.length) {
      log.warn(`Answers that differ from the kept ${file} and are NOT applied: ${differing.join(', ')}. To change them, edit ${file} (then run setup-droplet again)`)
    }
    // The release to start is the one key setup (like deploy) keeps current in the file: the stack
    // unit starts what it names at every boot.
    if (existing.APP_VERSION !== version) {
      log.info(`Setting APP_VERSION=${version} in ${file} (was ${existing.APP_VERSION ?? 'unset'}): the release this run starts`)
      if (!isDryRun()) setEnvValue(file, 'APP_VERSION', version)
    }
    env = { ...existing, APP_VERSION: version }
  } else {
    const values = await collectValues(plan, version, await keptFromFailedRun(plan.s))
    const content = renderEnvFile(fs.readFileSync(templateFile(), 'utf8'), values, `# Written by setup-droplet on ${isoSeconds(new Date())} from deployment/.env.production.template.\n# Mode 600: it holds the secrets; the services read it when their containers are created (deploy).`)
    env = parseEnvFile(content)
    // A dry run on a fresh host names the newest tag only by a placeholder: not a value to judge.
    const problems = validateDeploymentConfig(env, plan.mode).filter((p) => !(p.key === 'APP_VERSION' && version === UNKNOWN_TAG))
    if (problems.length) throw new OpsError('config', describeProblems('the new .env.production', problems))
    log.info(`Writing ${file} (mode 600)`)
    writeFile(file, content, 0o600)
  }
  await handOver(plan.s.DEPLOY_USER, file, 0o600)
  return env
}

/**
 * A re-run after a run that failed (setup never completed): its .env.production gives way to this
 * run's answers, but for what has initialised something, which is kept and named.
 */
async function keptFromFailedRun(s: SetupSettings): Promise<Record<string, string>> {
  const earlier = readEnvFile(s.cfg.envFile)
  if (!earlier) return {}
  const volume = `${s.cfg.COMPOSE_PROJECT_NAME}_postgres_data`
  const initialised = s.cfg.DB_MODE === 'compose' && (await tryRun({ argv: ['docker', 'volume', 'inspect', volume], mutates: false, timeoutMs: 30_000 })).exitCode === 0
  const kept = initialisedValues(earlier, initialised)
  const names = Object.keys(kept)
  log.info(`Applying this run's answers to ${s.cfg.envFile} (written by an earlier run that did not complete)${names.length ? `; kept from it: ${names.join(', ')} (the database in volume ${volume} was initialised with them)` : ''}`)
  const overruled = changedAnswers(answersForEnvFile(s), kept).filter((key) => key in kept)
  if (overruled.length) log.warn(`Answers NOT applied: ${overruled.join(', ')}: the database was initialised with the earlier values. To change them, change them in PostgreSQL first, or remove the volume ${volume} if it holds nothing yet`)
  return kept
}

/** The given answers (with what an earlier run initialised), then prompts for the missing ones, then what can be generated. */
async function collectValues(plan: Plan, version: string, kept: Record<string, string>): Promise<Record<string, string>> {
  const v = { ...answersForEnvFile(plan.s), ...kept }
  v.TELEGRAM_BOT_TOKEN ??= await ask('Enter Telegram Bot Token', { secret: true, validate: RULES.TELEGRAM_BOT_TOKEN })
  const webhookUrl = plan.mode === 'webhook' ? (v.TELEGRAM_WEBHOOK_URL ??= await ask('Enter Telegram Webhook URL', { validate: RULES.TELEGRAM_WEBHOOK_URL })) : null
  if (!v.POSTGRES_PASSWORD && canPrompt()) {
    v.POSTGRES_PASSWORD = await ask('Enter PostgreSQL Password (empty: generate one)', { secret: true, fallback: '', validate: (p) => (p === '' ? null : RULES.POSTGRES_PASSWORD(p)) })
  }
  v.STRIPE_API_KEY ??= await ask('Enter Stripe API Key', { secret: true, validate: RULES.STRIPE_API_KEY })
  if (webhookUrl !== null) {
    const host = new URL(webhookUrl).hostname
    v.DOMAIN ??= canPrompt() ? await ask('Enter domain name for SSL', { fallback: host, validate: RULES.DOMAIN }) : host
  }
  v.BOT_IMAGE ??= await ask('Enter the bot image (registry/repository, without tag)', { validate: RULES.BOT_IMAGE })
  await collectOffsite(plan.s, v)
  await collectPitr(v, plan.s.cfg.BACKUP_DIR)
  await collectMonitoring(v, plan.s.cfg.DEPLOY_DIR)

  if (webhookUrl === null) v.TELEGRAM_WEBHOOK_URL = ''
  if (!v.POSTGRES_PASSWORD) v.POSTGRES_PASSWORD = randomString(32, ALNUM)
  v.TELEGRAM_WEBHOOK_SECRET ??= randomString(48, ALNUM + '_-')
  // The bot's own role, not the superuser (lib/db/app-role.ts creates it before the first migration).
  v.DATABASE_URL ??= composeDatabaseUrl(APP_ROLE, randomString(32, ALNUM), v.POSTGRES_DB ?? templateDefault('POSTGRES_DB'))
  v.APP_VERSION = version
  // The generated ones too, by the same names every script redacts.
  addSecretsFrom(v)
  return v
}

/**
 * Off-site copies (optional): the bucket and its keys, asked on a terminal (an empty bucket: off);
 * then the age key pair. A given BACKUP_AGE_IDENTITY_FILE that exists (the identity kept from a
 * lost droplet) is used as it is; with no BACKUP_AGE_RECIPIENT a new pair is generated, stored at
 * BACKUP_AGE_IDENTITY_FILE (600, the deploy user's) and shown once, never logged.
 */
async function collectOffsite(s: SetupSettings, v: Record<string, string>): Promise<void> {
  if (!v.OFFSITE_S3_BUCKET && canPrompt()) {
    v.OFFSITE_S3_BUCKET = await ask('Off-site backup bucket (S3 or DigitalOcean Spaces; empty: no off-site copies)', { fallback: '', validate: (b) => (b === '' || /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(b) ? null : '3-63 lowercase letters, digits, dots and hyphens') })
  }
  if (!v.OFFSITE_S3_BUCKET) {
    delete v.OFFSITE_S3_BUCKET
    log.info('Off-site backup copies: off (no OFFSITE_S3_BUCKET); set it in .env.production to turn them on')
    return
  }
  v.OFFSITE_S3_ENDPOINT ??= await ask('Off-site endpoint URL (e.g. https://fra1.digitaloceanspaces.com)', { validate: (u) => (/^https?:\/\/\S+$/.test(u) ? null : 'an http(s) URL') })
  // the region has a default (Spaces ignores it): asked only when someone is there to answer
  if (!v.OFFSITE_S3_REGION && canPrompt()) v.OFFSITE_S3_REGION = await ask('Off-site region', { fallback: 'us-east-1' })
  v.OFFSITE_S3_ACCESS_KEY_ID ??= await ask('Off-site access key id', { secret: true, validate: (k) => (k ? null : 'required') })
  v.OFFSITE_S3_SECRET_ACCESS_KEY ??= await ask('Off-site secret access key', { secret: true, validate: (k) => (k ? null : 'required') })
  v.BACKUP_AGE_IDENTITY_FILE ??= defaultIdentityFile(s.cfg.DEPLOY_DIR)
  const file = v.BACKUP_AGE_IDENTITY_FILE
  const owner = s.DEPLOY_USER
  if (fs.existsSync(file)) {
    // The identity kept from the droplet that made the copies: disaster recovery.
    const held = await recipientsOf(file)
    if (!held.length) throw new OpsError('config', `BACKUP_AGE_IDENTITY_FILE=${file} holds no age identity (a line AGE-SECRET-KEY-1...)`)
    if (v.BACKUP_AGE_RECIPIENT && !held.includes(v.BACKUP_AGE_RECIPIENT)) {
      throw new OpsError('config', `BACKUP_AGE_IDENTITY_FILE=${file} holds the key for ${held.join(', ')}, not BACKUP_AGE_RECIPIENT=${v.BACKUP_AGE_RECIPIENT}`)
    }
    v.BACKUP_AGE_RECIPIENT ??= held[0] ?? ''
    log.info(`Using the age identity in ${file} (public key ${v.BACKUP_AGE_RECIPIENT}) for off-site copies`)
    await handOver(owner, file, 0o600)
  } else if (v.BACKUP_AGE_RECIPIENT) {
    if (!isAgeRecipient(v.BACKUP_AGE_RECIPIENT)) throw new OpsError('config', 'BACKUP_AGE_RECIPIENT must be an age public key (age1..., from `age-keygen -y`)')
    log.warn(`BACKUP_AGE_IDENTITY_FILE=${file} does not exist: this droplet encrypts off-site copies to ${v.BACKUP_AGE_RECIPIENT} but cannot decrypt them; put the identity there to restore from the bucket`)
  } else {
    const pair = await generateKeyPair()
    v.BACKUP_AGE_RECIPIENT = pair.recipient
    log.info(`Generated the age key pair for off-site copies: public key ${pair.recipient}, identity ${file}`)
    writeFile(file, identityFileContent(pair.identity, pair.recipient, isoSeconds(new Date())), 0o600)
    await handOver(owner, file, 0o600)
    if (isDryRun()) return
    // stdout, not the log: the log file is read by more people, and for longer, than this screen.
    process.stdout.write(identityNotice(pair.identity, pair.recipient, file))
    if (canPrompt()) {
      await ask('Type "saved" once the identity above is stored off this droplet', { validate: (a) => (a.toLowerCase() === 'saved' ? null : 'type saved: without it the off-site copies cannot be read after the droplet is lost') })
    }
  }
  // Every answer checked as the scripts will read it: a typo stops setup, not the first backup.
  offsiteSettings(v)
}

function randomString(length: number, alphabet: string): string {
  return Array.from({ length }, () => alphabet[randomInt(alphabet.length)]).join('')
}

function templateFile(): string {
  return path.join(TOOLKIT_DIR, 'deployment', '.env.production.template')
}

function templateDefault(key: string): string {
  const value = parseEnvFile(fs.readFileSync(templateFile(), 'utf8'))[key]
  if (value === undefined) throw new OpsError('config', `${templateFile()} has no default for ${key}`)
  return value
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

// ---- 9. TLS (webhook mode) ---------------------------------------------------------------------

async function configureSsl(plan: Plan, env: Record<string, string>, compose: ComposeProject): Promise<void> {
  if (plan.mode === 'polling') {
    step('Skipping SSL certificates: polling mode has no public ingress')
    return
  }
  step('Configuring SSL certificates')
  const domain = env.DOMAIN
  // validateDeploymentConfig requires it in webhook mode; a plain record cannot say so
  if (!domain) throw new OpsError('config', `${plan.s.cfg.envFile} has no DOMAIN: webhook mode needs it for the certificate`)
  const letsencryptDir = env.LETSENCRYPT_DIR || DEFAULT_LETSENCRYPT_DIR
  const cert = certificatePaths(letsencryptDir, domain)
  // nginx mounts the webroot for renewals; created here so Docker does not make it a root-owned
  // empty directory on its own.
  await run(installDir(env.CERTBOT_WEBROOT || '/var/www/certbot', '0755', 'root'))
  if (fs.existsSync(cert.fullchain) && fs.existsSync(cert.privkey)) {
    log.info(`Certificate for ${domain} already present in ${cert.dir}`)
    return
  }
  if (plan.selfSigned) {
    await run(installDir(cert.dir, '0700', 'root'))
    await run(selfSignedCertificate(letsencryptDir, domain))
    log.warn(`Self-signed certificate for ${domain} in ${cert.dir}: Telegram accepts it only when it is uploaded with setWebhook's certificate parameter`)
    return
  }
  await retry(
    () => run(certbotCertonly({
      domain, email: plan.s.CERTBOT_EMAIL ?? null, staging: plan.staging, letsencryptDir,
      preHook: shellLine(composeStop(compose, ['nginx']).argv), postHook: shellLine(composeStart(compose, ['nginx']).argv),
    })),
    { isTransient: looksTransient, what: 'certbot' },
  )
  log.info(`Certificate for ${domain} issued${plan.staging ? ' (staging: not trusted by Telegram)' : ''}`)
  if (letsencryptDir !== DEFAULT_LETSENCRYPT_DIR) log.warn(`Certificates live in ${letsencryptDir}: renew them with \`certbot renew --config-dir ${letsencryptDir}\` (the certbot timer only renews ${DEFAULT_LETSENCRYPT_DIR})`)
}

// ---- 10. systemd units -------------------------------------------------------------------------

async function createSystemdService(s: SetupSettings, stack: ComposeProject): Promise<void> {
  step('Creating systemd service')
  // The stack unit runs scripts/stack.ts, which reads the compose files and profiles from
  // .env.production at each start: a later switch between polling and webhook mode needs no new unit.
  const files = renderUnits({
    TOOLKIT_DIR,
    DEPLOY_DIR: s.cfg.DEPLOY_DIR,
    ENV_FILE: s.cfg.envFile,
    BACKUP_DIR: s.cfg.BACKUP_DIR,
    LOG_FILE: s.cfg.LOG_FILE,
    LOG_DIR: s.logDir,
    COMPOSE_PROJECT_NAME: s.cfg.COMPOSE_PROJECT_NAME,
    COMPOSE_FILE: s.cfg.composeFile,
    DEPLOY_USER: s.DEPLOY_USER,
    TSX: path.join(TOOLKIT_DIR, 'node_modules', '.bin', 'tsx'),
    PATH: servicePath(),
  }, { monitoring: stack.profiles.includes('monitoring') })
  for (const file of files) writeFileIfChanged(file.file, file.content, 0o644)
  const units = files.filter((f) => f.file.startsWith('/etc/systemd/')).map((f) => f.file)
  if (!isDryRun()) {
    const verified = await run(verifyUnits(units))
    const warnings = unitWarnings(verified.stdout + verified.stderr, units)
    if (warnings.length) throw new OpsError('config', `systemd-analyze verify: ${warnings.join(' | ')}`)
    await run(verifyLogrotate(LOGROTATE_FILE))
  }
  await run(systemctl('daemon-reload'))
}

/** `tsx` on PATH (lib/setup/tsx-command.ts), unless someone else's tsx is there already. */
function installTsxCommand(): void {
  const current = fs.existsSync(TSX_COMMAND) ? fs.readFileSync(TSX_COMMAND, 'utf8') : null
  if (current !== null && !current.includes(TSX_MARK)) {
    log.warn(`${TSX_COMMAND} exists and is not the toolkit's: left alone. Run the scripts with ${path.join(TOOLKIT_DIR, 'node_modules', '.bin', 'tsx')} or the .sh wrappers`)
    return
  }
  writeFileIfChanged(TSX_COMMAND, tsxWrapper(process.execPath, TOOLKIT_DIR), 0o755)
}

function servicePath(): string {
  const dirs = [path.dirname(process.execPath), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']
  return [...new Set(dirs)].join(':')
}

// ---- 11. start ---------------------------------------------------------------------------------

/** The release's images, its first migration, then the whole stack; returns the deployment opened. */
async function startServices(s: SetupSettings, compose: ComposeProject, version: string): Promise<DeployEvent> {
  step('Starting services')
  // Opened now, appended only once the stack is healthy: a setup that stops halfway leaves no
  // in_progress event for deploy to settle, and the next run opens its own.
  const event = newEvent('deploy', version, null, 'manual')
  // The tag on the command line as deploy passes it; .env.production names the same one.
  const vars = { APP_VERSION: version }
  // Not postgres: it runs an image built here (POSTGRES_IMAGE with pgBackRest), which no registry holds.
  const pulled = ['bot', 'redis', ...(compose.profiles.includes('webhook') ? ['nginx'] : [])]
  await retry(() => run(composePull(compose, vars, pulled)), { isTransient: looksTransient, what: 'docker compose pull' })
  await preparePostgres(loadConfig(withoutOffsite(s.input)))
  // The database schema first, with only the services the migration needs.
  await run(composeUp(compose, ['postgres', 'redis'], vars))
  const data = await openContext(withoutOffsite(s.input))
  await waitForDataServices(data)
  await prepareAppRole(data)
  log.info(`Running database migrations (${s.cfg.MIGRATE_COMMAND})`)
  await run(firstMigration(compose, s.cfg.MIGRATE_COMMAND, vars))
  // Then the whole stack on this release, as deploy switches: the stack unit only ever starts
  // what exists (--no-recreate), and on a re-run it is already active (its start is a no-op), so
  // it would leave the bot of an earlier run's release in place. Containers that already run this
  // release are left as they are.
  await run(composeUp(compose, [], vars, { removeOrphans: true }))
  log.info(`Enabling ${ENABLED_UNITS.join(', ')}; starting the stack unit (it brings the stack up at every boot) and the timers`)
  await run(systemctl('enable', ...ENABLED_UNITS))
  await run(systemctl('start', STACK_UNIT, BACKUP_TIMER, DRILL_TIMER))
  await startHealthMetrics(compose)
  return event
}

/** `up` returns once the containers run; the bot's role is made by a query, so the server must answer. */
async function waitForDataServices(ctx: Context): Promise<void> {
  if (isDryRun()) return
  const { waitedOut, report } = await waitUntilHealthy(ctx, ['postgres', 'redis'], STARTUP_WAIT_MS)
  if (waitedOut) throw new OpsError('health_failed', `PostgreSQL or Redis did not become healthy: ${JSON.stringify(report.services)}`)
}

/** With point-in-time recovery on, the first full base backup: WAL is replayed onto it. */
async function takeFirstBaseBackup(ctx: Context | null, account: Account): Promise<void> {
  if (!ctx?.cfg.PITR_ENABLED || ctx.cfg.DB_MODE !== 'compose') return
  step('Taking the first base backup')
  await firstBaseBackup(ctx, account.user)
}

// ---- 12. health --------------------------------------------------------------------------------

/** Waits for every service, ending at once when the bot is certain never to become healthy. */
async function runHealthChecks(plan: Plan, version: string): Promise<Context | null> {
  step('Running health checks')
  if (isDryRun()) {
    log.info(`[dry-run] would wait up to ${STARTUP_WAIT_MS / 60_000} minutes for every service to be healthy`)
    return null
  }
  const ctx = await openContext(withoutOffsite(plan.s.input))
  const started = Date.now()
  const { report, dead } = await waitUntilHealthy(ctx, SERVICES, STARTUP_WAIT_MS)
  for (const [name, health] of Object.entries(report.services)) {
    if (!health) continue
    const line = `${name}: ${health.status === 'not_deployed' ? 'not deployed' : health.status} (${health.detail})`
    if (health.status === 'healthy' || (health.status === 'not_deployed' && plan.mode === 'polling')) log.info(line)
    else log.error(line)
  }
  const waited = `${Math.round((Date.now() - started) / 1000)}s`
  const where = `see the lines above, \`systemctl status ${STACK_UNIT}\` and \`docker compose -p ${plan.s.cfg.COMPOSE_PROJECT_NAME} logs bot\``
  if (dead) {
    throw new OpsError('health_failed', `${version} will not become healthy: ${dead} (after ${waited}; waiting the full ${STARTUP_WAIT_MS / 60_000} minutes would not change it): ${where}. Fix the release or set APP_VERSION to another one, then run setup-droplet again`)
  }
  const nginxMissing = plan.mode === 'webhook' && report.services.nginx?.status !== 'healthy'
  if (report.overall_status !== 'healthy' || nginxMissing) {
    throw new OpsError('health_failed', `Services not healthy after ${waited}: ${where}`)
  }
  step('All services healthy')
  return ctx
}

/**
 * Webhook mode, once nginx and the bot serve: Telegram's webhook set to TELEGRAM_WEBHOOK_URL with
 * TELEGRAM_WEBHOOK_SECRET (only when it differs), as deploy does, through TELEGRAM_API_BASE.
 */
async function registerTelegramWebhook(plan: Plan, ctx: Context | null, account: Account): Promise<void> {
  if (plan.mode !== 'webhook') return
  step('Registering the Telegram webhook')
  if (!ctx) {
    log.info('[dry-run] would set Telegram\'s webhook to TELEGRAM_WEBHOOK_URL if it differs')
    return
  }
  await registerWebhook(ctx.cfg)
  // What was registered (a hash) is the deploy user's from now on: deploy replaces it.
  const state = webhookStateFile(ctx.cfg.DEPLOY_DIR)
  if (fs.existsSync(state)) await handOver(account.user, state, 0o600)
}

// ---- 13. the first deployment -------------------------------------------------------------------

/**
 * The release setup started is the first deployment, recorded as deploy records one: an audit
 * event and artifacts.json's current artifact. Without them the first deploy has nothing to roll
 * back to. Written as root, then handed to the deploy user, who appends and replaces them from
 * then on. A run over a host where this release is already current records nothing.
 */
async function recordDeployment(s: SetupSettings, { account, version, event, ctx }: { account: Account; version: string; event: DeployEvent; ctx: Context | null }): Promise<void> {
  step('Recording the deployment')
  const cfg = s.cfg
  if (!ctx || isDryRun()) {
    log.info(`[dry-run] would record ${version} as deployed: an event in ${cfg.AUDIT_LOG}, the current artifact in ${cfg.ARTIFACTS_FILE}`)
    return
  }
  const state = readState(cfg.ARTIFACTS_FILE, cfg.legacyArtifactsFile)
  const revision = await schemaRevision(ctx.db).catch((error: unknown) => {
    log.warn(`Cannot read the schema revision: ${messageOf(error)}`)
    return null
  })
  const artifact = await artifactFor(ctx, version, { rollbackFrom: null, schemaRevision: revision })
  const artifactId = artifact.artifact_id
  const sha = artifact.git_commit_sha
  if (state.current?.artifact_id === artifactId) {
    log.info(`${artifactId} is already the current deployment in ${cfg.ARTIFACTS_FILE}`)
    return
  }
  const completed = completeEvent({
    ...event,
    artifact_id: artifactId,
    previous_artifact_id: state.current?.artifact_id ?? null,
    health_check_passed: true,
    migration_applied: true,
    schema_revision_after: revision,
  }, 'success', null)
  appendEvent(cfg.AUDIT_LOG, completed)
  writeState(cfg.ARTIFACTS_FILE, { current: artifact, previous: state.current ? { ...state.current, deployed: false } : null })
  await handOver(account.user, cfg.AUDIT_LOG, 0o640)
  await handOver(account.user, cfg.ARTIFACTS_FILE, 0o644)
  log.info(`Recorded ${artifactId} (${sha.slice(0, 12)}) as the current deployment: the first deploy can roll back to it`)
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

// ---- files -------------------------------------------------------------------------------------

/** Files are written whole (temp, fsync, rename); under --dry-run only announced, never their content. */
function writeFile(file: string, content: string, mode: number): void {
  if (isDryRun()) {
    process.stdout.write(`[dry-run] write ${file} (mode ${mode.toString(8)})\n`)
    return
  }
  writeFileAtomic(file, content, mode)
  setOwnerAndMode(file, null, mode)
}

function writeFileIfChanged(file: string, content: string, mode: number): void {
  const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null
  if (current === content) return
  writeFile(file, content, mode)
  if (!isDryRun()) log.info(`Wrote ${file}`)
}

