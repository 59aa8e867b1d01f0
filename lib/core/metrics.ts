import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { log } from './log.ts'
import { CREATE_NEW_FLAGS, openNoFollow } from './no-follow.ts'
import { isDryRun } from './shell.ts'
import { dayjs } from './time.ts'

// Prometheus metrics published through node_exporter's textfile collector: each script writes its
// own `<METRICS_DIR>/toogoodtogo_<name>.prom` whole, through a temp file renamed in, so the
// collector never reads half a file (it reads every *.prom on each scrape; the temp name does not
// end in .prom). A metric is a record of what happened, never a reason for a backup or a deploy to
// fail: every error here becomes one warning.
//
// One file per writer and per backup type: two scripts never rewrite each other's numbers, and a
// scheduled backup's file is not lost when a manual one is written. The same metric family may then
// appear in several files; node_exporter merges them as long as HELP and TYPE agree, which is why
// both come from the single HELP table below.

export interface MetricsTarget {
  /** node_exporter's --collector.textfile.directory */
  METRICS_DIR: string
}

export type Labels = Record<string, string>

export interface Sample {
  name: MetricName
  labels?: Labels
  value: number
}

const HELP = {
  toogoodtogo_backup_last_success_timestamp_seconds: 'Unix time the last successful backup of this type finished',
  toogoodtogo_backup_last_size_bytes: 'Size of the last successful backup of this type, in bytes',
  toogoodtogo_backup_last_duration_seconds: 'How long the last successful backup of this type took',
  toogoodtogo_offsite_last_success_timestamp_seconds: 'Unix time the last off-site copy was verified in the bucket',
  toogoodtogo_offsite_last_size_bytes: 'Size of the last off-site copy (encrypted), in bytes',
  toogoodtogo_drill_last_timestamp_seconds: 'Unix time the last restore drill finished',
  toogoodtogo_drill_last_success: '1 when the last restore drill passed, 0 when it failed',
  toogoodtogo_deploy_last_timestamp_seconds: 'Unix time the last deploy or rollback finished',
  toogoodtogo_deploy_last_outcome: '1 for the outcome of the last deploy or rollback, 0 for the others',
  toogoodtogo_deploy_last_downtime_seconds: 'Downtime of the last deploy or rollback (old heartbeat to new)',
  toogoodtogo_release_info: 'The running release (version label), always 1',
  toogoodtogo_release_deployed_timestamp_seconds: 'Unix time the running release was deployed',
  toogoodtogo_wal_last_archived_timestamp_seconds: 'Unix time up to which every WAL segment written is archived: the check time while none waits (point-in-time recovery)',
  toogoodtogo_physical_backup_last_success_timestamp_seconds: 'Unix time the last pgBackRest base backup into this repository finished (point-in-time recovery)',
  toogoodtogo_service_healthy: '1 when the service was healthy at the last health check, 0 otherwise (degraded counts as not healthy)',
  toogoodtogo_health_check_last_timestamp_seconds: 'Unix time of the last health check',
} as const

export type MetricName = keyof typeof HELP

export const DEPLOY_OUTCOMES = ['success', 'failed', 'rolled_back'] as const
export type DeployOutcome = (typeof DEPLOY_OUTCOMES)[number]

/** The exposition format node_exporter's textfile collector parses: HELP and TYPE once per family. */
export function formatMetrics(samples: readonly Sample[]): string {
  const lines: string[] = []
  // Families must be contiguous in the text format: group by name, in first-seen order.
  const names = [...new Set(samples.map((s) => s.name))]
  for (const name of names) {
    lines.push(`# HELP ${name} ${HELP[name]}`, `# TYPE ${name} gauge`)
    for (const sample of samples.filter((s) => s.name === name)) lines.push(`${name}${formatLabels(sample.labels)} ${formatValue(sample.value)}`)
  }
  return lines.join('\n') + '\n'
}

function formatLabels(labels: Labels | undefined): string {
  const entries = Object.entries(labels ?? {})
  if (entries.length === 0) return ''
  return `{${entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}`
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN'
  if (value === Infinity) return '+Inf'
  if (value === -Infinity) return '-Inf'
  return String(value)
}

export function metricsFile(target: MetricsTarget, name: string): string {
  return path.join(target.METRICS_DIR, `toogoodtogo_${name}.prom`)
}

/**
 * Replaces `toogoodtogo_<name>.prom` with these samples. Returns whether it was written; a failure
 * (no permission, not a directory, full disk) is logged as a warning and never thrown.
 */
export function publishMetrics(target: MetricsTarget, name: string, samples: readonly Sample[]): boolean {
  const file = metricsFile(target, name)
  // Not `.prom`: the collector must never see the temp file, whatever happens to it.
  // Random and created new (O_EXCL): the directory is group-writable, a predictable name could be a planted link.
  const temp = path.join(target.METRICS_DIR, `.toogoodtogo_${name}.prom.${crypto.randomBytes(8).toString('hex')}.tmp`)
  // A dry run changes nothing, metrics included: Prometheus would believe a backup happened.
  if (isDryRun()) return false
  // No directory: node_exporter is not installed (monitoring is opt-in), which is not worth a
  // warning on every run. A directory that exists but cannot be written is.
  if (!fs.existsSync(target.METRICS_DIR)) {
    log.debug(`Metrics not published: ${target.METRICS_DIR} does not exist (no node_exporter textfile collector)`)
    return false
  }
  try {
    if (!/^[a-z0-9_]+$/.test(name)) throw new Error(`invalid metrics file name "${name}"`)
    const fd = openNoFollow(temp, CREATE_NEW_FLAGS, 0o644)
    try {
      fs.writeFileSync(fd, formatMetrics(samples))
      // 0644 whatever the umask (systemd units may run with 027): node_exporter runs as its own
      // user and must read what the deploy user wrote.
      fs.fchmodSync(fd, 0o644)
    } finally {
      fs.closeSync(fd)
    }
    fs.renameSync(temp, file)
    return true
  } catch (error) {
    try {
      fs.rmSync(temp, { force: true })
    } catch {
      // the warning below already says the directory is unusable
    }
    log.warn(`Could not publish metrics to ${file}: ${(error as Error).message} (monitoring will not see this run)`)
    return false
  }
}

const seconds = (date: Date): number => dayjs(date).unix()

export interface BackupMetrics {
  type: 'scheduled' | 'pre_deployment' | 'manual'
  finishedAt: Date
  sizeBytes: number
  durationSeconds?: number
}

/** After a backup is verified and indexed. */
export function recordBackup(target: MetricsTarget, backup: BackupMetrics): boolean {
  const labels = { type: backup.type }
  const samples: Sample[] = [
    { name: 'toogoodtogo_backup_last_success_timestamp_seconds', labels, value: seconds(backup.finishedAt) },
    { name: 'toogoodtogo_backup_last_size_bytes', labels, value: backup.sizeBytes },
  ]
  if (backup.durationSeconds !== undefined) samples.push({ name: 'toogoodtogo_backup_last_duration_seconds', labels, value: backup.durationSeconds })
  return publishMetrics(target, `backup_${backup.type}`, samples)
}

/** After an off-site copy was verified in the bucket. */
export function recordOffsiteCopy(target: MetricsTarget, copy: { finishedAt: Date; sizeBytes: number }): boolean {
  return publishMetrics(target, 'offsite', [
    { name: 'toogoodtogo_offsite_last_success_timestamp_seconds', value: seconds(copy.finishedAt) },
    { name: 'toogoodtogo_offsite_last_size_bytes', value: copy.sizeBytes },
  ])
}

/** After a restore drill, passed or failed. */
export function recordDrill(target: MetricsTarget, drill: { finishedAt: Date; passed: boolean }): boolean {
  return publishMetrics(target, 'drill', [
    { name: 'toogoodtogo_drill_last_timestamp_seconds', value: seconds(drill.finishedAt) },
    { name: 'toogoodtogo_drill_last_success', value: drill.passed ? 1 : 0 },
  ])
}

export interface DeployMetrics {
  event: 'deploy' | 'rollback'
  outcome: DeployOutcome
  finishedAt: Date
  /** null when the bot was never switched (a failure before the switch) */
  downtimeSeconds: number | null
  /** the version running afterwards, and since when; null when nothing is known to run */
  running: { version: string; deployedAt: Date } | null
}

/** When a deploy or rollback ends, whatever its outcome. One file: the last event is what counts. */
export function recordDeploy(target: MetricsTarget, deploy: DeployMetrics): boolean {
  const samples: Sample[] = [
    { name: 'toogoodtogo_deploy_last_timestamp_seconds', labels: { event: deploy.event }, value: seconds(deploy.finishedAt) },
    // Every outcome present, 0 or 1: an alert can match `== 1` without the series coming and going.
    ...DEPLOY_OUTCOMES.map((outcome): Sample => ({ name: 'toogoodtogo_deploy_last_outcome', labels: { event: deploy.event, outcome }, value: outcome === deploy.outcome ? 1 : 0 })),
  ]
  if (deploy.downtimeSeconds !== null) samples.push({ name: 'toogoodtogo_deploy_last_downtime_seconds', labels: { event: deploy.event }, value: deploy.downtimeSeconds })
  if (deploy.running) {
    samples.push(
      { name: 'toogoodtogo_release_info', labels: { version: deploy.running.version }, value: 1 },
      { name: 'toogoodtogo_release_deployed_timestamp_seconds', value: seconds(deploy.running.deployedAt) },
    )
  }
  return publishMetrics(target, 'deploy', samples)
}

/** The age of the WAL archive, when point-in-time recovery is on. */
export function recordWalArchive(target: MetricsTarget, lastArchivedAt: Date): boolean {
  return publishMetrics(target, 'wal', [{ name: 'toogoodtogo_wal_last_archived_timestamp_seconds', value: seconds(lastArchivedAt) }])
}

/**
 * After a pgBackRest base backup into repository `repo` succeeded. One file per repository: a run
 * that fails for repo2 must leave repo1's time standing, and repo2's age growing until it alerts.
 */
export function recordPhysicalBackup(target: MetricsTarget, repo: number, finishedAt: Date): boolean {
  return publishMetrics(target, `physical_backup_repo${repo}`, [{ name: 'toogoodtogo_physical_backup_last_success_timestamp_seconds', labels: { repo: `repo${repo}` }, value: seconds(finishedAt) }])
}

/** After a health check: one gauge per service that is deployed (nginx outside webhook mode is not). */
export function recordHealth(target: MetricsTarget, checkedAt: Date, services: readonly { service: string; healthy: boolean }[]): boolean {
  return publishMetrics(target, 'health', [
    { name: 'toogoodtogo_health_check_last_timestamp_seconds', value: seconds(checkedAt) },
    ...services.map((s): Sample => ({ name: 'toogoodtogo_service_healthy', labels: { service: s.service }, value: s.healthy ? 1 : 0 })),
  ])
}
