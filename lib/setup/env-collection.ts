import { randomInt } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { TOOLKIT_DIR } from '../core/config.ts'
import { assertValid, composeDatabaseUrl, describeProblems, optionalKeys, renderEnvFile, RULES, templateKeys, validateDeploymentConfig } from '../core/deployment-config.ts'
import { parseEnvFile, readEnvFile, setEnvValue } from '../core/env-file.ts'
import { OpsError } from '../core/errors.ts'
import { isoSeconds } from '../core/format.ts'
import { log } from '../core/log.ts'
import { ask, canPrompt } from '../core/prompt.ts'
import { addSecretsFrom } from '../core/redact.ts'
import { $read, isDryRun } from '../core/shell.ts'
import { APP_ROLE } from '../db/app-role.ts'
import { recipientsOf } from '../offsite/identity.ts'
import { isAgeRecipient, offsiteSettings } from '../core/offsite-config.ts'
import { writeFile } from './files.ts'
import { handOver } from './hand-over.ts'
import { collectMonitoring } from './monitoring.ts'
import { defaultIdentityFile, generateKeyPair, identityFileContent, identityNotice } from '../offsite/key-pair.ts'
import { collectPitr } from './pitr.ts'
import { step, type Plan } from './plan.ts'
import { UNKNOWN_TAG } from './repo-access.ts'
import { changedAnswers, initialisedValues, setupEverCompleted, type SetupSettings } from './settings.ts'

// .env.production: the answers (environment, --env-file, prompts), checked before the first
// change, then written once. Once setup has completed here, the file is the operator's: kept as
// it is, and answers that differ from it are named, never applied.

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

/** .env.production once setup has completed here: the operator's from then on. Before that, null: the answers write it. */
export function keptEnvFile(s: SetupSettings): Record<string, string> | null {
  return setupEverCompleted(s.cfg.DEPLOY_DIR, s.markerFile, s.cfg.ARTIFACTS_FILE) ? readEnvFile(s.cfg.envFile) : null
}

/** Given answers must be valid; missing ones must be askable. Nothing has been changed yet. */
export function checkAnswers(plan: Plan): void {
  const given = answersForEnvFile(plan.s)
  const problems = validateDeploymentConfig(given, plan.mode).filter((p) => p.message !== 'is missing' && given[p.key] !== undefined)
  if (problems.length) throw new OpsError('config', describeProblems('the answers given', problems))
  const missing = promptedKeys(plan).filter((key) => !given[key])
  if (missing.length && !canPrompt()) {
    throw new OpsError('config', `Missing ${missing.join(', ')}: set ${missing.length > 1 ? 'them' : 'it'} in the environment or in --env-file FILE, or run on a terminal to be asked. Nothing was changed`)
  }
  // Off-site answers given without a terminal to complete them must be whole now; the key pair
  // may still be generated later (any valid recipient stands in for it here).
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

/** .env.production: kept when an earlier run wrote it, else from the answers; returns its values. */
export async function configureEnvironment(plan: Plan, version: string): Promise<Record<string, string>> {
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
  const initialised = s.cfg.DB_MODE === 'compose' && (await $read({ nothrow: true, timeoutMs: 30_000 })`docker volume inspect ${volume}`).exitCode === 0
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
