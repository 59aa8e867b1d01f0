import fs from 'node:fs'
import path from 'node:path'
import { z } from 'zod'
import { writeFileAtomic } from '../core/atomic-file.ts'
import { OpsError } from '../core/errors.ts'
import { acquireLock, type Lock } from '../core/lock.ts'
import { dayjs } from '../core/time.ts'

// backup_index.json: the contract's fields, the data model's Backup Record, and what a restore
// needs to prove it got every row (sha256, per-table row counts taken from the dump stream).
// A safety backup (before a restore or a rollback) is `manual` with its `reason` recorded.
export const BACKUP_TYPES = ['scheduled', 'pre_deployment', 'manual'] as const
export const BACKUP_ID = /^[A-Za-z0-9_]{1,80}_\d{8}_\d{6}(?:_\d{1,3})?$/

const timestamp = z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z$/, 'an ISO-8601 UTC time')

const drillSchema = z.object({
  at: timestamp,
  outcome: z.enum(['passed', 'failed']),
  detail: z.string(),
})

// The off-site copy (lib/offsite): set only once the object was verified on the server and its
// sidecar written. A failed copy is recorded beside it, so `--list` and the next
// `--offsite-sync` see it; both default to null, so an index written before off-site still parses.
const offsiteCopySchema = z.object({
  key: z.string().min(1),
  uploaded_at: timestamp,
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
})

const offsiteErrorSchema = z.object({
  at: timestamp,
  problem: z.string(),
  message: z.string(),
})

export type OffsiteFailureRecord = z.infer<typeof offsiteErrorSchema>

export const backupRecordSchema = z.object({
  backup_id: z.string().regex(BACKUP_ID),
  created_at: timestamp,
  backup_type: z.enum(BACKUP_TYPES),
  file_path: z.string().min(1),
  file_size_mb: z.number().int().nonnegative(),
  file_size_bytes: z.number().int().nonnegative(),
  database_name: z.string(),
  pg_dump_version: z.string(),
  compressed: z.boolean(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  row_counts: z.record(z.string(), z.number().int().nonnegative()),
  verified: z.boolean(),
  verified_at: timestamp.nullable(),
  retention_until: timestamp,
  artifact_id: z.string().nullable(),
  reason: z.string().nullable().default(null),
  last_drill: drillSchema.nullable().default(null),
  // What the dump's snapshot could see, as txid_current_snapshot() printed it just before pg_dump
  // took its own (later, so it sees at least as much): a row whose transaction this snapshot does
  // not see is not in the backup. Clocks can drift; transaction ids cannot.
  snapshot: z.string().regex(/^\d+:\d+:[\d,]*$/).nullable().default(null),
  /** the server's system identifier: transaction ids compare only within one cluster */
  cluster_id: z.string().regex(/^\d+$/).nullable().default(null),
  offsite: offsiteCopySchema.nullable().default(null),
  /** the last failed attempt to copy it off-site; cleared when a copy succeeds */
  offsite_error: offsiteErrorSchema.nullable().default(null),
})

export type BackupRecord = z.infer<typeof backupRecordSchema>
export type BackupType = BackupRecord['backup_type']

/**
 * A safety backup: the database a restore, rollback or failed deploy replaced (`manual` with a
 * reason). It is kept, but it is not the newest copy of the live data: `restore latest`, the
 * drill and status pass over it. Plain data in: an off-site sidecar's record is not parsed.
 */
export function isSafetyBackup(b: { backup_type?: unknown; reason?: unknown }): boolean {
  return b.backup_type === 'manual' && Boolean(b.reason)
}

/**
 * Why a record's `file_path` is not the backup's own file, or null when it is: the file named after
 * its id in BACKUP_DIR (the directory's real path, so BACKUP_DIR may itself be a link), not a link.
 * The index is a file others can edit: a path anywhere else is never read, restored or deleted.
 */
export function foreignFileProblem(backupDir: string, record: Pick<BackupRecord, 'backup_id' | 'file_path'>): string | null {
  const own = `${record.backup_id}.sql.gz`
  const file = record.file_path
  if (path.basename(file) !== own) return `its file_path ${file} is not ${own}, the file named after its id`
  let dir: string | null
  let base: string | null
  try {
    dir = fs.realpathSync(path.dirname(path.resolve(file)))
    base = fs.realpathSync(backupDir)
  } catch {
    dir = base = null
  }
  if (dir === null || dir !== base) return `its file_path ${file} is not in BACKUP_DIR ${backupDir}`
  try {
    if (fs.lstatSync(file).isSymbolicLink()) return `its file ${file} is a symbolic link`
  } catch {
    // missing: each caller has its own words for that
  }
  return null
}

// A backup made by this droplet cannot be dated after its clock; a few minutes allow for a clock
// that was stepped back since (NTP). Anything later is a clock that jumped, or an edited record.
export const CLOCK_SKEW_MS = 5 * 60_000

export function isFutureDated(record: { created_at: string }, now = new Date()): boolean {
  return dayjs.utc(record.created_at).isAfter(dayjs.utc(now).add(CLOCK_SKEW_MS, 'millisecond'))
}

const indexSchema = z.object({ backups: z.array(backupRecordSchema) })
export type BackupIndex = z.infer<typeof indexSchema>

export function indexPath(backupDir: string): string {
  return path.join(backupDir, 'backup_index.json')
}

/** A missing index is an empty one; an unreadable or invalid one stops everything, untouched. */
export function readIndex(backupDir: string): BackupIndex {
  const file = indexPath(backupDir)
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { backups: [] }
    throw new OpsError('corrupt_state', `Cannot read backup index ${file}: ${(error as Error).message}`)
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    throw new OpsError('corrupt_state', `Backup index ${file} is not valid JSON (${(error as Error).message}); fix or move it aside, it was left untouched`)
  }
  const parsed = indexSchema.safeParse(json)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    throw new OpsError('corrupt_state', `Backup index ${file} is invalid at ${issue.path.join('.') || '(root)'}: ${issue.message}; fix or move it aside, it was left untouched`)
  }
  return parsed.data
}

export function writeIndex(backupDir: string, index: BackupIndex): void {
  const sorted = [...index.backups].sort((a, b) => a.created_at.localeCompare(b.created_at) || a.backup_id.localeCompare(b.backup_id))
  writeFileAtomic(indexPath(backupDir), JSON.stringify({ backups: sorted }, null, 2) + '\n')
}

/** Read-modify-write under the index lock, so a timer backup and a deploy backup both land. */
export async function updateIndex(backupDir: string, change: (index: BackupIndex) => void): Promise<BackupIndex> {
  const lock = await acquireLock(path.join(backupDir, '.index.lock'), {
    command: 'backup index update',
    waitMs: 60_000,
    staleAfterMs: 10 * 60_000,
  })
  try {
    const index = readIndex(backupDir)
    change(index)
    writeIndex(backupDir, index)
    return index
  } finally {
    lock.release()
  }
}

/** Serializes whole backups (dump, verify, index, retention) between processes. */
export function lockBackups(backupDir: string, command: string): Promise<Lock> {
  return acquireLock(path.join(backupDir, '.backup.lock'), {
    command,
    waitMs: 15 * 60_000,
    staleAfterMs: 60 * 60_000,
  })
}

export function findBackup(index: BackupIndex, id: string): BackupRecord | undefined {
  return index.backups.find((b) => b.backup_id === id)
}

export function newestVerified(index: BackupIndex): BackupRecord | undefined {
  return [...index.backups].reverse().find((b) => b.verified)
}
