import fs from 'node:fs'
import path from 'node:path'
import { TOOLKIT_DIR } from '../core/config.ts'
import { OpsError } from '../core/errors.ts'

// deployment/systemd/ and deployment/logrotate/ hold templates with @PLACEHOLDERS@; setup-droplet
// renders them with this host's real paths. Rendering is pure; installing is the caller's.
export const STACK_UNIT = 'toogoodtogo.service'
export const HEALTHCHECK_UNIT = 'toogoodtogo-healthcheck.service'
export const BACKUP_TIMER = 'toogoodtogo-backup.timer'
export const DRILL_TIMER = 'toogoodtogo-restore-drill.timer'

export const UNIT_FILES = [
  STACK_UNIT,
  HEALTHCHECK_UNIT,
  'toogoodtogo-backup.service',
  BACKUP_TIMER,
  'toogoodtogo-restore-drill.service',
  DRILL_TIMER,
  'toogoodtogo-failure@.service',
] as const

/**
 * The OnFailure= notifier's script (a POSIX shell script with curl, run as root): installed outside
 * the deploy user's checkout, so that a deploy user cannot change what root runs.
 */
export const FAILURE_NOTIFIER = { template: 'toogoodtogo-notify-failure', file: '/usr/local/lib/toogoodtogo-notify-failure' } as const

/** Installed with monitoring only: the health check every minute that the BotUnhealthy alert reads. */
export const HEALTH_METRICS_TIMER = 'toogoodtogo-health-metrics.timer'
export const MONITORING_UNIT_FILES = ['toogoodtogo-health-metrics.service', HEALTH_METRICS_TIMER] as const

/** Enabled at setup: the stack and its post-boot check start at boot, the timers arm themselves. */
export const ENABLED_UNITS = [STACK_UNIT, HEALTHCHECK_UNIT, BACKUP_TIMER, DRILL_TIMER] as const

export const SYSTEMD_DIR = '/etc/systemd/system'
export const LOGROTATE_FILE = '/etc/logrotate.d/toogoodtogo'

export interface UnitValues {
  TOOLKIT_DIR: string
  DEPLOY_DIR: string
  ENV_FILE: string
  BACKUP_DIR: string
  LOG_FILE: string
  LOG_DIR: string
  COMPOSE_PROJECT_NAME: string
  COMPOSE_FILE: string
  DEPLOY_USER: string
  /** the toolkit's own tsx, by absolute path (`npx tsx` outside the project would try the network) */
  TSX: string
  /** PATH for the services: the directory of this node first, so tsx's `env node` finds it */
  PATH: string
}

// systemd splits Environment= and Exec lines on spaces and expands % and $; a path holding one of
// those would be silently cut. Such a path is refused rather than quoted.
const UNIT_SAFE = /^[^\s"'\\%$;]+$/

export function renderTemplate(template: string, values: Record<string, string>, name: string): string {
  return template.replace(/@([A-Z_]+)@/g, (whole, key: string) => {
    const value = values[key]
    if (value === undefined) throw new OpsError('config', `${name}: no value for placeholder ${whole}`)
    return value
  })
}

export function unitValuesProblems(values: UnitValues): string[] {
  return (Object.entries(values) as [string, string][])
    .filter(([, value]) => !UNIT_SAFE.test(value))
    .map(([key, value]) => `${key}=${value} contains a space, quote, %, $ or ;, which systemd would split or expand`)
}

export interface RenderedFile {
  /** where it is installed */
  file: string
  content: string
}

/** Every unit (with monitoring, its own too) and the logrotate file, rendered; throws on a value systemd cannot take. */
export function renderUnits(values: UnitValues, options: { monitoring?: boolean; templateRoot?: string } = {}): RenderedFile[] {
  const templateRoot = options.templateRoot ?? path.join(TOOLKIT_DIR, 'deployment')
  const problems = unitValuesProblems(values)
  if (problems.length) throw new OpsError('config', `Cannot write the systemd units: ${problems.join('; ')}`)
  const vars = values as unknown as Record<string, string>
  const units = [...UNIT_FILES, ...(options.monitoring ? MONITORING_UNIT_FILES : [])].map((name) => ({
    file: path.join(SYSTEMD_DIR, name),
    content: renderTemplate(fs.readFileSync(path.join(templateRoot, 'systemd', name), 'utf8'), vars, name),
  }))
  const logrotate = { file: LOGROTATE_FILE, content: renderTemplate(fs.readFileSync(path.join(templateRoot, 'logrotate', 'toogoodtogo'), 'utf8'), vars, 'logrotate/toogoodtogo') }
  const notifier = { file: FAILURE_NOTIFIER.file, content: fs.readFileSync(path.join(templateRoot, 'systemd', FAILURE_NOTIFIER.template), 'utf8') }
  return [...units, logrotate, notifier]
}
