import { randomUUID } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { z } from 'zod'
import { writeFileAtomic } from '../core/atomic-file.ts'
import { APPEND_FLAGS, openNoFollow } from '../core/no-follow.ts'
import { OpsError } from '../core/errors.ts'
import { isoSeconds } from '../core/format.ts'
import { redact } from '../core/redact.ts'
import { isDryRun } from '../core/shell.ts'
import { dayjs } from '../core/time.ts'

// artifacts.json holds the current and previous Deployment Artifact (data model); the audit log
// holds every Deployment Event as JSON lines, appended: an event's state is its last line.
export const TAG = /^(v\d+\.\d+\.\d+|[0-9a-f]{40})$/
const time = z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z$/)

export const artifactSchema = z.object({
  artifact_id: z.string().regex(TAG),
  git_commit_sha: z.string().regex(/^[0-9a-f]{40}$/),
  git_tag: z.string().regex(/^v\d+\.\d+\.\d+$/).nullable(),
  docker_image_uri: z.string(),
  docker_image_digest: z.string().regex(/^sha256:[0-9a-f]{64}$/).nullable(),
  deployed: z.boolean(),
  deployed_at: time.nullable(),
  rollback_from: z.string().nullable(),
  schema_revision: z.string().nullable(),
  // Added later: files written before them still validate.
  /** when the image was built (Docker's Created) */
  created_at: time.nullable().optional(),
  /** the image's size */
  size_mb: z.number().int().nonnegative().nullable().optional(),
})
export type Artifact = z.infer<typeof artifactSchema>

const stateSchema = z.object({ current: artifactSchema.nullable(), previous: artifactSchema.nullable() })
export type DeployState = z.infer<typeof stateSchema>

export const eventSchema = z.object({
  event_id: z.string().uuid(),
  event_type: z.enum(['deploy', 'rollback', 'restart', 'config_update']),
  started_at: time,
  completed_at: time.nullable(),
  duration_seconds: z.number().int().nonnegative().nullable(),
  triggered_by: z.enum(['github_action', 'manual', 'automated']),
  operator: z.string(),
  artifact_id: z.string(),
  previous_artifact_id: z.string().nullable(),
  // cancelled: refused at the confirmation, nothing changed (added later; older lines never hold it)
  status: z.enum(['in_progress', 'success', 'failed', 'rolled_back', 'cancelled']),
  error_message: z.string().nullable(),
  health_check_passed: z.boolean(),
  backup_created: z.boolean(),
  migration_applied: z.boolean(),
  backup_id: z.string().nullable(),
  downtime_seconds: z.number().nonnegative().nullable(),
  schema_revision_before: z.string().nullable(),
  schema_revision_after: z.string().nullable(),
  pid: z.number().int(),
  host: z.string(),
  /** a rollback's: the event of the deploy it undoes (automatic rollbacks; added later, optional) */
  rollback_of: z.string().uuid().nullable().optional(),
})
export type DeployEvent = z.infer<typeof eventSchema>

/** artifacts.json; a host set up before it moved is read at its old place until the next write. */
export function readState(file: string, legacyFile?: string): DeployState {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return legacyFile && fs.existsSync(legacyFile) ? readState(legacyFile) : { current: null, previous: null }
    throw new OpsError('corrupt_state', `Cannot read ${file}: ${(error as Error).message}`)
  }
  const parsed = (() => {
    try {
      return stateSchema.safeParse(JSON.parse(text))
    } catch (error) {
      throw new OpsError('corrupt_state', `${file} is not valid JSON (${(error as Error).message}); it was left untouched`)
    }
  })()
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    throw new OpsError('corrupt_state', `${file} is invalid at ${issue.path.join('.') || '(root)'}: ${issue.message}; it was left untouched`)
  }
  return parsed.data
}

/**
 * The version running now by artifacts.json, for a backup's artifact_id (data model: the
 * application version at the time of the backup); null when none is recorded, or when the file
 * cannot be read: a backup never fails for it, deploy and status report it where they read it.
 */
export function runningArtifactId(file: string, legacyFile?: string): string | null {
  try {
    return readState(file, legacyFile).current?.artifact_id ?? null
  } catch {
    return null
  }
}

export function writeState(file: string, state: DeployState): void {
  if (isDryRun()) return
  fs.mkdirSync(path.dirname(file), { recursive: true })
  writeFileAtomic(file, JSON.stringify(state, null, 2) + '\n', 0o644)
}

/** Every event's latest line, in order of first appearance. A corrupt line stops everything. */
export function readEvents(file: string): DeployEvent[] {
  if (!fs.existsSync(file)) return []
  const latest = new Map<string, DeployEvent>()
  fs.readFileSync(file, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (!line.trim()) return
      let parsed
      try {
        parsed = eventSchema.safeParse(JSON.parse(line))
      } catch {
        throw new OpsError('corrupt_state', `Audit log ${file} line ${i + 1} is not valid JSON; fix or move it aside`)
      }
      if (!parsed.success) throw new OpsError('corrupt_state', `Audit log ${file} line ${i + 1} is invalid at ${parsed.error.issues[0]!.path.join('.')}: ${parsed.error.issues[0]!.message}`)
      latest.set(parsed.data.event_id, parsed.data)
    })
  return [...latest.values()]
}

/**
 * One line per write, O_APPEND and fsync: concurrent writers cannot interleave within a line. The
 * error is a command's own words (a migration's may quote DATABASE_URL): redacted as LOG_FILE is.
 */
export function appendEvent(file: string, event: DeployEvent): void {
  if (isDryRun()) return
  fs.mkdirSync(path.dirname(file), { recursive: true })
  const fd = openNoFollow(file, APPEND_FLAGS, 0o640)
  try {
    const redacted = { ...event, error_message: event.error_message === null ? null : redact(event.error_message) }
    fs.writeSync(fd, JSON.stringify(eventSchema.parse(redacted)) + '\n')
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

export function newEvent(type: DeployEvent['event_type'], artifactId: string, previous: string | null, triggeredBy: DeployEvent['triggered_by']): DeployEvent {
  return {
    event_id: randomUUID(),
    event_type: type,
    started_at: isoSeconds(),
    completed_at: null,
    duration_seconds: null,
    triggered_by: triggeredBy,
    operator: process.env.SUDO_USER || process.env.USER || os.userInfo().username,
    artifact_id: artifactId,
    previous_artifact_id: previous,
    status: 'in_progress',
    error_message: null,
    health_check_passed: false,
    backup_created: false,
    migration_applied: false,
    backup_id: null,
    downtime_seconds: null,
    schema_revision_before: null,
    schema_revision_after: null,
    pid: process.pid,
    host: os.hostname(),
  }
}

export function completeEvent(event: DeployEvent, status: DeployEvent['status'], error: string | null): DeployEvent {
  const now = dayjs.utc()
  return {
    ...event,
    status,
    error_message: error,
    completed_at: isoSeconds(now),
    duration_seconds: Math.max(0, Math.round(now.diff(event.started_at) / 1000)),
  }
}

/** The last successful deploy or rollback of a version other than `current`: where a rollback goes. */
export function lastGoodBefore(events: DeployEvent[], current: string | null): string | null {
  return [...events].reverse().find((e) => e.status === 'success' && e.artifact_id !== current)?.artifact_id ?? null
}

export function deployedVersions(events: DeployEvent[]): string[] {
  return [...new Set(events.filter((e) => e.status === 'success').map((e) => e.artifact_id))]
}
