import { pitrUnavailable, readPitrState, type PhysicalRun } from '../db/pitr.ts'
import fs from 'node:fs'
import path from 'node:path'
import type { Config } from '../core/config.ts'
import type { Context } from '../stack/context.ts'
import { messageOf } from '../core/errors.ts'
import { formatAge, formatBytes, formatMb, isoSeconds } from '../core/format.ts'
import { metricsFile } from '../core/metrics.ts'
import { $read } from '../core/shell.ts'
import { isSafetyBackup, readIndex, type BackupRecord } from '../db/backup-index.ts'
import { readEvents, readState } from '../release/deploy-state.ts'
import { checkHealth, checked, overall, SERVICES, type HealthReport } from '../stack/health.ts'
import { dayjs } from '../core/time.ts'
import { clusterAttention, clusterRows, readCluster, type ClusterStatus } from '../swarm/cluster.ts'

// status.sh: the one screen an operator reads first. Every section is read on its own; one that
// cannot be read becomes a line in `unreadable` saying why, and the rest is still shown. Nothing
// here changes anything. Reading (collectStatus) and printing (formatStatus) are separate so the
// screen can be tested without a host.

export interface ReleaseStatus {
  version: string
  commit: string
  deployed_at: string | null
  previous: string | null
  rollback_from: string | null
}

export interface DeployStatus {
  event_type: string
  artifact_id: string
  status: string
  started_at: string
  completed_at: string | null
  downtime_seconds: number | null
  error_message: string | null
  triggered_by: string
}

export interface BackupStatus {
  backup_id: string
  backup_type: string
  created_at: string
  size_bytes: number
  verified: boolean
}

export interface OffsiteStatus {
  backup_id: string
  uploaded_at: string
  size_bytes: number | null
}

export interface DrillStatus {
  at: string
  outcome: string
  detail: string
  backup_id: string
}

export interface DiskStatus {
  path: string
  free_mb: number
  free_percent: number
}

/** One row of `docker system df`: sizes as Docker prints them (1.183GB). */
export interface DockerDiskUse {
  type: string
  total: number
  active: number
  size: string
  reclaimable: string
}

export interface AlertStatus {
  name: string
  severity: string
  summary: string
  since: string
}

export interface StatusReport {
  generated_at: string
  /** null: nothing recorded as deployed */
  release: ReleaseStatus | null
  last_deploy: DeployStatus | null
  newest_backup: BackupStatus | null
  /** null: no backup has an off-site copy (or off-site copies are not set up) */
  newest_offsite: OffsiteStatus | null
  offsite_configured: boolean
  last_drill: DrillStatus | null
  /** the moment up to which all WAL is archived, from the metric health-check publishes with PITR on; null: not published */
  wal_archived_at: string | null
  /** how the last pgBackRest base backup into each repository ended; null: point-in-time recovery off */
  base_backups: PhysicalRun[] | null
  disks: DiskStatus[]
  /** Docker's disk use (images, containers, volumes, build cache); null: Docker could not be asked */
  docker_disk: DockerDiskUse[] | null
  health: HealthReport | null
  /** null: no ALERTMANAGER_URL (monitoring off) */
  alerts: AlertStatus[] | null
  /** what could not be read, and why */
  unreadable: string[]
  /** on a Swarm manager: nodes, services, tasks not running; absent elsewhere */
  swarm?: ClusterStatus
}

/** Runs `read`; a failure becomes an `unreadable` line and the section's fallback. */
async function section<T>(report: StatusReport, what: string, fallback: T, read: () => T | Promise<T>): Promise<T> {
  try {
    return await read()
  } catch (error) {
    report.unreadable.push(`${what}: ${messageOf(error)}`)
    return fallback
  }
}

export interface CollectOptions {
  /** overall bound on the health probes; a probe still running then is reported unreadable */
  healthTimeoutMs?: number
  alertsTimeoutMs?: number
  now?: Date
}

export async function collectStatus(ctx: Context, options: CollectOptions = {}): Promise<StatusReport> {
  const cfg = ctx.cfg
  const now = options.now ?? new Date()
  const report: StatusReport = {
    generated_at: isoSeconds(now),
    release: null,
    last_deploy: null,
    newest_backup: null,
    newest_offsite: null,
    offsite_configured: cfg.offsite !== null,
    last_drill: null,
    wal_archived_at: null,
    base_backups: null,
    disks: [],
    docker_disk: null,
    health: null,
    alerts: null,
    unreadable: [],
  }
  // The slow parts (docker probes, an HTTP call) start first and run while the files are read.
  const health = section(report, 'health', null, () => healthInParallel(ctx, options.healthTimeoutMs ?? 15_000))
  // `docker system df` sizes every volume: seconds on a large one
  const dockerDisk = section(report, 'Docker disk use (docker system df)', null, async () => parseSystemDf((await $read({ timeoutMs: 30_000 })`docker system df --format '{{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}'`).stdout))
  const swarm = section(report, 'Swarm (docker node ls, service ls, service ps)', null, readCluster)
  const alerts = cfg.ALERTMANAGER_URL ? section(report, `alerts (${cfg.ALERTMANAGER_URL})`, null, () => firingAlerts(cfg.ALERTMANAGER_URL ?? '', options.alertsTimeoutMs ?? 5_000)) : Promise.resolve(null)

  report.release = await section(report, `running version (${cfg.ARTIFACTS_FILE})`, null, () => releaseFrom(cfg))
  report.last_deploy = await section(report, `deployment history (${cfg.AUDIT_LOG})`, null, () => lastDeploy(cfg.AUDIT_LOG))
  const backups = await section(report, `backup index (${cfg.BACKUP_DIR})`, null, () => readIndex(cfg.BACKUP_DIR).backups)
  if (backups) {
    report.newest_backup = newestBackup(backups)
    report.newest_offsite = newestOffsite(backups)
    report.last_drill = lastDrill(backups)
  }
  report.wal_archived_at = await section(report, 'WAL archive metric', null, () => walArchivedAt(cfg))
  if (!pitrUnavailable(cfg)) report.base_backups = await section(report, `base backups (${cfg.BACKUP_DIR}/pitr_state.json)`, null, () => readPitrState(cfg).last_runs)
  for (const dir of uniqueDirs([cfg.BACKUP_DIR, cfg.DEPLOY_DIR, path.dirname(cfg.LOG_FILE)])) {
    const disk = await section(report, `free disk (${dir})`, null, () => diskOf(dir))
    if (disk) report.disks.push(disk)
  }
  report.docker_disk = await dockerDisk
  report.health = await health
  report.alerts = await alerts
  const cluster = await swarm
  if (cluster) report.swarm = cluster
  return report
}

function releaseFrom(cfg: Config): ReleaseStatus | null {
  const state = readState(cfg.ARTIFACTS_FILE, cfg.legacyArtifactsFile)
  if (!state.current) return null
  return {
    version: state.current.artifact_id,
    commit: state.current.git_commit_sha,
    deployed_at: state.current.deployed_at,
    previous: state.previous?.artifact_id ?? null,
    rollback_from: state.current.rollback_from,
  }
}

function lastDeploy(auditLog: string): DeployStatus | null {
  // An automatic rollback (rollback_of: its deploy) is told by the deploy's own event, closed after it
  // as rolled_back or failed: that is the outcome to read first, not the rollback's success.
  const events = readEvents(auditLog).filter((e) => (e.event_type === 'deploy' || e.event_type === 'rollback') && !e.rollback_of)
  const last = events.at(-1)
  if (!last) return null
  return {
    event_type: last.event_type,
    artifact_id: last.artifact_id,
    status: last.status,
    started_at: last.started_at,
    completed_at: last.completed_at,
    downtime_seconds: last.downtime_seconds,
    error_message: last.error_message,
    triggered_by: last.triggered_by,
  }
}

/** The newest backup of the live data (a safety backup holds what a restore replaced). */
export function newestBackup(backups: readonly BackupRecord[]): BackupStatus | null {
  const newest = backups.filter((b) => !isSafetyBackup(b)).sort((a, b) => a.created_at.localeCompare(b.created_at)).at(-1)
  if (!newest) return null
  return { backup_id: newest.backup_id, backup_type: newest.backup_type, created_at: newest.created_at, size_bytes: newest.file_size_bytes, verified: newest.verified }
}

/**
 * The newest off-site copy of the live data. Read from the record as plain data: the field is recent, and an index
 * written by another version of the toolkit may lack it or shape it differently.
 */
export function newestOffsite(backups: readonly unknown[]): OffsiteStatus | null {
  let newest: OffsiteStatus | null = null
  for (const record of backups) {
    if (typeof record === 'object' && record !== null && isSafetyBackup(record)) continue
    const copy = offsiteOf(record)
    if (copy && (!newest || copy.uploaded_at > newest.uploaded_at)) newest = copy
  }
  return newest
}

function offsiteOf(record: unknown): OffsiteStatus | null {
  if (typeof record !== 'object' || record === null) return null
  const { backup_id: id, offsite } = record as { backup_id?: unknown; offsite?: unknown }
  if (typeof offsite !== 'object' || offsite === null) return null
  const { uploaded_at: at, size } = offsite as { uploaded_at?: unknown; size?: unknown }
  if (typeof at !== 'string' || !dayjs(at).isValid()) return null
  return { backup_id: typeof id === 'string' ? id : '?', uploaded_at: at, size_bytes: typeof size === 'number' ? size : null }
}

export function lastDrill(backups: readonly BackupRecord[]): DrillStatus | null {
  let last: DrillStatus | null = null
  for (const b of backups) {
    if (b.last_drill && (!last || b.last_drill.at > last.at)) last = { ...b.last_drill, backup_id: b.backup_id }
  }
  return last
}

/** From the metric PITR writes (lib/core/metrics.ts recordWalArchive); null while none is published. */
function walArchivedAt(cfg: Config): string | null {
  let text: string
  try {
    text = fs.readFileSync(metricsFile(cfg, 'wal'), 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw error
  }
  const match = /^toogoodtogo_wal_last_archived_timestamp_seconds\s+(\d+(?:\.\d+)?)$/m.exec(text)
  if (!match?.[1]) throw new Error(`no timestamp in ${metricsFile(cfg, 'wal')}`)
  return isoSeconds(dayjs.unix(Number(match[1])))
}

export function parseSystemDf(text: string): DockerDiskUse[] {
  // Docker's text reaches the screen: only the characters a size or a type name has.
  const clean = (s: string): string => s.replace(/[^\w .%()]/g, '').slice(0, 40)
  return text.split('\n').flatMap((line): DockerDiskUse[] => {
    const [type, total, active, size, reclaimable] = line.split('\t')
    if (!type || size === undefined || reclaimable === undefined) return []
    return [{ type: clean(type), total: Number(total) || 0, active: Number(active) || 0, size: clean(size), reclaimable: clean(reclaimable) }]
  })
}

function uniqueDirs(dirs: string[]): string[] {
  const byDevice = new Map<string, string>()
  for (const dir of dirs) {
    // Each filesystem once: on a droplet all three are usually on `/`.
    let key = dir
    try {
      key = String(fs.statSync(dir).dev)
    } catch {
      // a missing directory is reported by diskOf
    }
    if (!byDevice.has(key)) byDevice.set(key, dir)
  }
  return [...byDevice.values()]
}

function diskOf(dir: string): DiskStatus {
  const stats = fs.statfsSync(dir)
  const free = stats.bavail * stats.bsize
  const total = stats.blocks * stats.bsize
  return { path: dir, free_mb: Math.floor(free / (1024 * 1024)), free_percent: total > 0 ? Math.round((free / total) * 1000) / 10 : 0 }
}

/** Each service probed at once (checkHealth goes one by one), under one deadline. */
async function healthInParallel(ctx: Context, timeoutMs: number): Promise<HealthReport> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs / 1000}s`)), timeoutMs)
  })
  try {
    const parts = await Promise.race([Promise.all(SERVICES.map((service) => checkHealth(ctx, [service]))), deadline])
    const services: HealthReport['services'] = {}
    for (const part of parts) Object.assign(services, part.services)
    return { timestamp: isoSeconds(), overall_status: overall(services), services }
  } finally {
    clearTimeout(timer)
  }
}

/** Alertmanager's API v2: the alerts firing now, silenced and inhibited ones left out. */
async function firingAlerts(baseUrl: string, timeoutMs: number): Promise<AlertStatus[]> {
  const url = `${baseUrl.replace(/\/$/, '')}/api/v2/alerts?active=true&silenced=false&inhibited=false`
  const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
  if (!response.ok) throw new Error(`HTTP ${response.status}`)
  return parseAlerts(await response.json())
}

export function parseAlerts(body: unknown): AlertStatus[] {
  if (!Array.isArray(body)) throw new Error('not a list of alerts')
  return body.flatMap((alert: unknown): AlertStatus[] => {
    if (typeof alert !== 'object' || alert === null) return []
    const { labels, annotations, startsAt, status } = alert as { labels?: Record<string, unknown>; annotations?: Record<string, unknown>; startsAt?: unknown; status?: { state?: unknown } }
    if (status?.state !== undefined && status.state !== 'active') return []
    return [{
      name: String(labels?.alertname ?? '?'),
      severity: String(labels?.severity ?? 'none'),
      summary: String(annotations?.summary ?? ''),
      since: typeof startsAt === 'string' ? startsAt : '',
    }]
  })
}

// ---- the screen ---------------------------------------------------------------------------------

function when(iso: string | null, now: Date): string {
  if (!iso) return 'unknown time'
  if (!dayjs(iso).isValid()) return iso
  return `${iso.slice(0, 16).replace('T', ' ')} UTC, ${formatAge(ageOf(iso, now))} ago`
}

function shorten(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 3)}...`
}

const ageOf = (iso: string, now: Date): number => dayjs(now).diff(iso) / 1000

/** Thresholds the alert rules use too (deployment/monitoring/rules). */
const BACKUP_STALE_S = 26 * 3600
const DRILL_STALE_S = 8 * 86400
const WAL_STALE_S = 30 * 60
const DISK_LOW_PERCENT = 15

/** What deserves a look, in words; empty when everything read is fine. */
export function needsAttention(r: StatusReport, now: Date): string[] {
  const out: string[] = []
  if (r.last_deploy && (r.last_deploy.status === 'failed' || r.last_deploy.status === 'rolled_back')) out.push(`last ${r.last_deploy.event_type} ${r.last_deploy.status}`)
  if (r.last_deploy?.status === 'in_progress') out.push(`a ${r.last_deploy.event_type} is in progress (or was killed)`)
  if (!r.newest_backup) out.push('no backup')
  else if (ageOf(r.newest_backup.created_at, now) > BACKUP_STALE_S) out.push('newest backup older than 26h')
  if (r.offsite_configured && (!r.newest_offsite || ageOf(r.newest_offsite.uploaded_at, now) > BACKUP_STALE_S)) out.push('no off-site copy in 26h')
  if (r.last_drill?.outcome === 'failed') out.push('last restore drill failed')
  else if (!r.last_drill || ageOf(r.last_drill.at, now) > DRILL_STALE_S) out.push('no restore drill in 8 days')
  if (r.wal_archived_at && ageOf(r.wal_archived_at, now) > WAL_STALE_S) out.push('WAL archive behind')
  if (r.base_backups) {
    if (!r.base_backups.some((b) => b.outcome === 'success')) out.push('no base backup (backup.sh --physical)')
    for (const b of r.base_backups) {
      if (b.outcome === 'failed') out.push(`last base backup to repo${b.repo} failed`)
      else if (ageOf(b.at, now) > BACKUP_STALE_S) out.push(`no base backup to repo${b.repo} in 26h`)
    }
  }
  for (const d of r.disks) if (d.free_percent < DISK_LOW_PERCENT) out.push(`disk ${d.path} under ${DISK_LOW_PERCENT}% free`)
  if (r.health) {
    for (const [name, h] of checked(r.health.services)) if (h.status === 'unhealthy' || h.status === 'degraded') out.push(`${name} ${h.status}`)
  }
  if (r.swarm) out.push(...clusterAttention(r.swarm))
  if (r.alerts && r.alerts.length > 0) out.push(`${r.alerts.length} alert(s) firing`)
  if (r.unreadable.length > 0) out.push(`${r.unreadable.length} thing(s) could not be read`)
  return out
}

export function formatStatus(r: StatusReport, now: Date): string {
  const lines: string[] = [`toogoodtogo status, ${r.generated_at.replace('T', ' ').replace('Z', ' UTC')}`, '']
  const row = (label: string, text: string): void => {
    lines.push(`${label.padEnd(13)}${text}`)
  }
  const more = (text: string): void => {
    lines.push(`${''.padEnd(13)}${text}`)
  }

  if (r.release) {
    const rolled = r.release.rollback_from ? `, rolled back from ${r.release.rollback_from}` : ''
    row('Running', `${r.release.version} (${r.release.commit.slice(0, 7)}) since ${when(r.release.deployed_at, now)}${rolled}`)
    if (r.release.previous) more(`previous: ${r.release.previous}`)
  } else row('Running', 'nothing recorded in artifacts.json')

  if (r.last_deploy) {
    const d = r.last_deploy
    const downtime = d.downtime_seconds === null ? '' : `, downtime ${d.downtime_seconds}s`
    row('Last deploy', `${d.event_type} ${d.artifact_id}: ${d.status.toUpperCase()}, ${when(d.completed_at ?? d.started_at, now)}${downtime} (${d.triggered_by})`)
    if (d.error_message) more(d.error_message)
  } else row('Last deploy', 'none recorded')

  if (r.newest_backup) {
    const b = r.newest_backup
    row('Backup', `${b.backup_id} (${b.backup_type}, ${formatBytes(b.size_bytes)}${b.verified ? ', verified' : ', NOT verified'}), ${when(b.created_at, now)}`)
  } else row('Backup', 'none in the index')
  if (r.newest_offsite) row('Off-site', `${r.newest_offsite.backup_id}${r.newest_offsite.size_bytes === null ? '' : ` (${formatBytes(r.newest_offsite.size_bytes)})`}, ${when(r.newest_offsite.uploaded_at, now)}`)
  else row('Off-site', r.offsite_configured ? 'no copy yet' : 'not configured (OFFSITE_S3_BUCKET)')

  if (r.last_drill) row('Drill', `${r.last_drill.outcome.toUpperCase()} on ${r.last_drill.backup_id}, ${when(r.last_drill.at, now)}`)
  else row('Drill', 'never run')
  if (r.wal_archived_at) row('WAL archive', `everything up to ${when(r.wal_archived_at, now)}`)
  if (r.base_backups) {
    const runs = r.base_backups.map((b) => `repo${b.repo} ${b.type} ${b.outcome === 'success' ? (b.label ?? 'done') : 'FAILED'}, ${when(b.at, now)}`)
    row('Base backup', runs.length ? (runs[0] ?? '') : 'none yet (backup.sh --physical)')
    for (const line of runs.slice(1)) more(line)
  }

  row('Disk', r.disks.length === 0 ? 'unknown' : r.disks.map((d) => `${d.path} ${formatMb(d.free_mb)} free (${d.free_percent}%)`).join(', '))
  if (r.docker_disk) row('Docker', r.docker_disk.map((d) => `${d.type.toLowerCase().replace('local ', '')} ${d.size} (${d.reclaimable.replace(/ \(.*\)$/, '')} reclaimable)`).join(', '))

  if (r.health) {
    const services = checked(r.health.services)
    // The failed command's argv (`(exit 1: docker ps ...)`) is for the log, not this screen.
    const detail = (text: string): string => text.replace(/\s*\(exit \d+: .*\)$/, '')
    const details = new Set(services.map(([, h]) => `${h.status} (${detail(h.detail)})`))
    // Docker unreachable fails every probe the same way: one line says it once.
    const lines = details.size === 1 && services.length > 1
      ? [`every service: ${[...details].join('')}`]
      : services.map(([name, h]) => `${name}: ${h.status === 'not_deployed' ? 'not deployed' : h.status} (${detail(h.detail)})`)
    const [first, ...rest] = lines.map((line) => shorten(line, 160))
    row('Health', first ?? 'no service checked')
    for (const line of rest) more(line)
  } else row('Health', 'could not be checked')
  if (r.swarm) for (const [label, text] of clusterRows(r.swarm)) row(label, shorten(text, 160))

  if (r.alerts === null) row('Alerts', 'monitoring not configured (ALERTMANAGER_URL)')
  else if (r.alerts.length === 0) row('Alerts', 'none firing')
  else {
    row('Alerts', `${r.alerts.length} firing`)
    for (const a of r.alerts) more(`${a.name} [${a.severity}] ${a.summary}${a.since ? ` (since ${when(a.since, now)})` : ''}`)
  }

  for (const u of r.unreadable) row('Unreadable', u)
  const attention = needsAttention(r, now)
  lines.push('', attention.length === 0 ? 'All good.' : `Needs attention: ${attention.join('; ')}`)
  return lines.join('\n') + '\n'
}
