import fs from 'node:fs'
import path from 'node:path'
import { fsyncDir, fsyncFile } from '../core/atomic-file.ts'
import {
  BACKUP_ID,
  findBackup,
  foreignFileProblem,
  lockBackups,
  newestVerified,
  readIndex,
  updateIndex,
  type BackupIndex,
  type BackupRecord,
  type BackupType,
} from './backup-index.ts'
import type { Config } from '../core/config.ts'
import { isDiskFull, requireFreeDisk } from '../core/disk.ts'
import { DumpInspector, type DumpFacts } from './dump-inspector.ts'
import { OpsError, messageOf } from '../core/errors.ts'
import { fileStamp, formatBytes, formatMb, isoSeconds } from '../core/format.ts'
import { compressor } from '../commands/gzip.ts'
import { recordBackup } from '../core/metrics.ts'
import { log } from '../core/log.ts'
import { ByteProgress } from '../core/progress.ts'
import { pgDumpCommand, pgDumpVersion, psql, type Db } from '../commands/postgres.ts'
import { isDryRun } from '../core/shell.ts'
import { runStages } from '../core/runner.ts'
import { GunzipCheck, Sha256Stream, discard } from '../core/streams.ts'
import { uploadBackup } from '../offsite/upload.ts'
import { copyOffsite } from '../offsite/copies.ts'
import { outsideRetention } from '../core/retention.ts'
import { dayjs } from '../core/time.ts'

// The backup steps shared by backup.ts, restore.ts (its safety backup) and deploy.ts (the
// pre-deployment backup): one implementation, so every backup is made and checked the same way.
export interface BackupRequest {
  type: BackupType
  artifactId: string | null
  reason: string | null
  /** dump this database instead, named and recorded as db.database (restore's renamed-aside copy) */
  fromDatabase?: string
  /** gzip level, GZIP_LEVEL unless the backup must above all be quick */
  level?: number
  /** the contract's backup.sh says "Backup created: 245MB", its deploy.sh "Backup created: <file>" */
  announce?: 'size' | 'path'
}

/**
 * Dump, verify, index; then, when off-site copies are on, the encrypted copy. An off-site failure
 * does not throw: the record comes back with `offsite_error` set (warned, notified, indexed), so a
 * deploy's pre-deployment backup or a restore's safety backup goes on, and backup.ts exits 4.
 */
export async function createBackup(cfg: Config, db: Db, request: BackupRequest): Promise<BackupRecord> {
  const record = await createLocalBackup(cfg, db, request)
  if (!isDryRun()) recordBackup(cfg, { type: record.backup_type, finishedAt: new Date(), sizeBytes: record.file_size_bytes })
  if (!cfg.offsite) return record
  if (isDryRun()) {
    await uploadBackup(cfg.offsite, record.file_path, record)
    return record
  }
  // After the backup lock is released: a long upload must not hold up the next backup (a deploy's).
  return copyOffsite(cfg, cfg.offsite, record)
}

async function createLocalBackup(cfg: Config, db: Db, request: BackupRequest): Promise<BackupRecord> {
  ensureBackupDir(cfg.BACKUP_DIR)
  const available = requireFreeDisk(cfg.BACKUP_DIR, cfg.MIN_FREE_DISK_MB)
  log.info(`Available disk space: ${formatMb(available)}`)
  if (db.mode === 'url') await refuseOlderPgDump(db)
  const source = request.fromDatabase ? { ...db, database: request.fromDatabase } : db
  const lock = await lockBackups(cfg.BACKUP_DIR, `backup (${request.type})`)
  try {
    // A corrupt index stops us before the dump, not after it.
    const recorded = new Set(readIndex(cfg.BACKUP_DIR).backups.map((b) => b.backup_id))
    const { id, file } = claimName(cfg.BACKUP_DIR, db.database, new Date(), recorded)
    log.info(`Creating backup: ${path.basename(file)}`)
    const partial = `${file}.partial`
    const snapshot = await snapshotBeforeDump(source)
    const written = await dumpCompressed(source, partial, request.level)
    if (isDryRun()) return plannedRecord(id, file, request, db)
    log.info(`Backup created: ${request.announce === 'path' ? file : formatBytes(written.bytes)}`)
    log.info('Verifying backup integrity')
    try {
      checkWritten(written)
      publish(partial, file)
    } finally {
      fs.rmSync(partial, { force: true })
    }
    const now = dayjs.utc()
    log.info('Verification successful')
    const record: BackupRecord = {
      backup_id: id,
      // The moment the data is from, not when the file was finished: on a 1 GB database that is
      // 40 s of writes the backup does not hold.
      created_at: isoSeconds(snapshot.at),
      backup_type: request.type,
      file_path: file,
      file_size_mb: Math.round(written.bytes / (1024 * 1024)),
      file_size_bytes: written.bytes,
      database_name: db.database,
      pg_dump_version: written.facts.pgDumpVersion ?? 'unknown',
      compressed: true,
      sha256: written.sha256,
      row_counts: written.facts.rowCounts,
      verified: true,
      verified_at: isoSeconds(now),
      retention_until: isoSeconds(now.add(cfg.BACKUP_RETENTION_DAYS, 'day')),
      artifact_id: request.artifactId,
      reason: request.reason,
      last_drill: null,
      snapshot: snapshot.xids,
      cluster_id: snapshot.clusterId,
      offsite: null,
      offsite_error: null,
    }
    await updateIndex(cfg.BACKUP_DIR, (index) => void index.backups.push(record))
    return record
  } finally {
    lock.release()
  }
}

function ensureBackupDir(dir: string): void {
  if (isDryRun()) return
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
}

/**
 * `<db>_<YYYYMMDD_HHMMSS>`; a second backup within the same second gets `_1`, never overwrites. An
 * id the index still holds is taken too, even when its file has gone: ids name one backup only.
 */
function claimName(dir: string, database: string, now: Date, recorded: Set<string>): { id: string; file: string } {
  for (let n = 0; n < 1000; n++) {
    const id = `${database}_${fileStamp(now)}${n ? `_${n}` : ''}`
    const file = path.join(dir, `${id}.sql.gz`)
    if (!recorded.has(id) && !fs.existsSync(file) && !fs.existsSync(`${file}.partial`) && BACKUP_ID.test(id)) return { id, file }
  }
  throw new OpsError('dump_failed', `Cannot find a free backup file name in ${dir}`)
}

interface Snapshot {
  at: Date
  xids: string | null
  clusterId: string | null
}

/**
 * What the dump will at least contain, noted just before pg_dump starts: pg_dump's own snapshot is
 * taken later, so every transaction visible here is in the dump. A row committed in between is
 * both in the dump and counted as newer (exported twice, never lost).
 */
async function snapshotBeforeDump(db: Db): Promise<Snapshot> {
  const at = new Date()
  if (isDryRun()) return { at, xids: null, clusterId: null }
  const out = (await psql(db, db.database, SNAPSHOT_SQL, { read: true, timeoutMs: 30_000 })).stdout.trim()
  const [xids = '', clusterId = ''] = out.split('|')
  return { at, xids: xids || null, clusterId: clusterId || null }
}

// pg_control_system() is for superusers unless granted: a managed database's role gets no cluster id.
export const SNAPSHOT_SQL = `SELECT txid_current_snapshot()::text, CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE') THEN (SELECT system_identifier::text FROM pg_control_system()) END`

interface Written {
  bytes: number
  sha256: string
  /** what the written file decompresses to: rows per table, pg_dump version, trailer */
  facts: DumpFacts
}

/**
 * pg_dump | pigz | (sha256, inflate a copy and count its rows) > file.partial, streamed; pg_dump
 * feeds pigz through a kernel pipe, so only the compressed bytes pass through node. The partial is
 * fsynced, or removed on failure.
 */
async function dumpCompressed(db: Db, partial: string, level?: number): Promise<Written> {
  const inspector = new DumpInspector()
  const hasher = new Sha256Stream()
  try {
    await runStages([pgDumpCommand(db), await compressor(level), hasher, new ByteProgress('Dumping (compressed)'), new GunzipCheck(inspector), { writeTo: partial }], db.timeoutMs)
  } catch (error) {
    if (!isDryRun()) fs.rmSync(partial, { force: true })
    if (isDiskFull(error)) throw new OpsError('disk_space', `Disk full while writing ${partial}; the partial file was removed`, { cause: error })
    if (error instanceof OpsError && error.kind === 'timeout') throw error
    throw new OpsError('dump_failed', `pg_dump failed: ${messageOf(error)}`, { cause: error })
  }
  if (isDryRun()) return { bytes: 0, sha256: '', facts: inspector.facts() }
  fsyncFile(partial)
  return { bytes: fs.statSync(partial).size, sha256: hasher.digest(), facts: inspector.facts() }
}

/** The file decompressed (GunzipCheck) to a dump that carries its completion trailer. */
function checkWritten(written: Written): void {
  if (!written.facts.complete) throw new OpsError('verify_failed', 'The dump ended without its completion trailer: it is incomplete and was removed')
}

/** link(2) fails when the target exists, so publishing can never replace an older backup. */
function publish(partial: string, file: string): void {
  fs.linkSync(partial, file)
  fsyncDir(path.dirname(file))
}

export interface Expected {
  sha256?: string
  rowCounts?: Record<string, number>
}

/**
 * Reads the whole file back: the gzip stream must be intact, the dump must carry its completion
 * trailer (a truncated dump can still be valid gzip), and checksum and row counts must match what
 * was recorded when it was made.
 */
export async function verifyBackupFile(file: string, expected: Expected = {}): Promise<DumpFacts & { sha256: string }> {
  if (isDryRun()) return { rowCounts: {}, pgDumpVersion: null, complete: true, bytes: 0, sha256: '' }
  if (!fs.existsSync(file)) throw new OpsError('not_found', `Backup file not found: ${file}`)
  const hasher = new Sha256Stream()
  const inspector = new DumpInspector()
  try {
    await runStages([{ readFrom: file }, hasher, new GunzipCheck(inspector), discard()], 30 * 60_000)
  } catch (error) {
    throw new OpsError('verify_failed', `Backup ${file} is corrupted: ${messageOf(error)}`, { cause: error })
  }
  const facts = inspector.facts()
  const sha256 = hasher.digest()
  if (!facts.complete) throw incompleteDump(file)
  if (expected.sha256 && expected.sha256 !== sha256) throw checksumMismatch(file, sha256, expected.sha256)
  if (expected.rowCounts) {
    const diff = diffCounts(expected.rowCounts, facts.rowCounts)
    if (diff) throw new OpsError('verify_failed', `Backup ${file} rows differ from the record: ${diff}`)
  }
  return { ...facts, sha256 }
}

export function incompleteDump(file: string): OpsError {
  return new OpsError('verify_failed', `Backup ${file} is incomplete: the dump has no completion trailer (truncated?)`)
}

export function checksumMismatch(file: string, actual: string, expected: string): OpsError {
  return new OpsError('verify_failed', `Backup ${file} does not match its recorded checksum (sha256 ${actual.slice(0, 12)}…, expected ${expected.slice(0, 12)}…)`)
}

function diffCounts(expected: Record<string, number>, actual: Record<string, number>): string | null {
  const tables = new Set([...Object.keys(expected), ...Object.keys(actual)])
  const diffs = [...tables]
    .filter((t) => expected[t] !== actual[t])
    .map((t) => `${t} ${expected[t] ?? 'missing'} expected, ${actual[t] ?? 'missing'} found`)
  return diffs.length ? diffs.slice(0, 5).join('; ') : null
}

async function refuseOlderPgDump(db: Db): Promise<void> {
  const client = majorOf(await pgDumpVersion(db))
  let server: number
  try {
    server = Math.floor(Number((await psql(db, db.database, 'SHOW server_version_num', { read: true, timeoutMs: 30_000 })).stdout.trim()) / 10000)
  } catch (error) {
    throw new OpsError('dump_failed', `Cannot connect to database ${db.database}: ${messageOf(error)}`, { cause: error })
  }
  if (client !== null && client < server) {
    throw new OpsError('dump_failed', `pg_dump on this host is version ${client} but the server is version ${server}: install postgresql-client-${server} (pg_dump cannot dump a newer server)`)
  }
}

function majorOf(versionLine: string): number | null {
  const match = /(\d+)(?:\.\d+)?/.exec(versionLine.replace(/^[^\d]*/, ''))
  return match ? Number(match[1]) : null
}

function plannedRecord(id: string, file: string, request: BackupRequest, db: Db): BackupRecord {
  const now = isoSeconds()
  return {
    backup_id: id, created_at: now, backup_type: request.type, file_path: file, file_size_mb: 0, file_size_bytes: 0,
    database_name: db.database, pg_dump_version: 'unknown', compressed: true, sha256: '0'.repeat(64), row_counts: {},
    verified: false, verified_at: null, retention_until: now, artifact_id: request.artifactId, reason: request.reason, last_drill: null,
    snapshot: null, cluster_id: null, offsite: null, offsite_error: null,
  }
}

// ---- retention ---------------------------------------------------------------------------------

/**
 * The union rule (lib/core/retention.ts) on the index: outside the newest `keepCount` AND past its
 * retention_until; the newest verified backup is always kept.
 */
export function chooseExpired(index: BackupIndex, now: Date, keepCount: number): BackupRecord[] {
  const newestFirst = [...index.backups].sort((a, b) => b.created_at.localeCompare(a.created_at))
  const keep = newestVerified(index)?.backup_id
  return outsideRetention(newestFirst, { count: keepCount, expired: (b) => dayjs.utc(b.retention_until).isBefore(now), protected: (b) => b.backup_id === keep })
}

export interface RetentionResult {
  deleted: BackupRecord[]
  missing: BackupRecord[]
  partials: string[]
  /** records whose file_path is not their own file in BACKUP_DIR: named, left alone, never deleted */
  foreign: { record: BackupRecord; problem: string }[]
}

export async function applyRetention(cfg: Config, now = new Date()): Promise<RetentionResult> {
  const result: RetentionResult = { deleted: [], missing: [], partials: [], foreign: [] }
  const lock = await lockBackups(cfg.BACKUP_DIR, 'backup retention')
  try {
    for (const name of fs.readdirSync(cfg.BACKUP_DIR)) {
      if (name.endsWith('.partial')) result.partials.push(path.join(cfg.BACKUP_DIR, name))
    }
    const index = readIndex(cfg.BACKUP_DIR)
    const own: BackupRecord[] = []
    for (const record of index.backups) {
      const problem = foreignFileProblem(cfg.BACKUP_DIR, record)
      if (problem) result.foreign.push({ record, problem })
      else own.push(record)
    }
    for (const { record, problem } of result.foreign) log.warn(`Backup ${record.backup_id} in the index is not trusted: ${problem}; retention leaves it and its path alone (fix or remove the record)`)
    result.missing = own.filter((b) => !fs.existsSync(b.file_path))
    const remaining = { backups: own.filter((b) => !result.missing.includes(b)) }
    result.deleted = chooseExpired(remaining, now, cfg.BACKUP_RETENTION_COUNT)
    if (isDryRun()) return result
    for (const partial of result.partials) {
      log.warn(`Removing leftover partial file from an interrupted backup: ${partial}`)
      fs.rmSync(partial, { force: true })
    }
    for (const gone of result.missing) log.warn(`Backup ${gone.backup_id} is in the index but its file ${gone.file_path} is missing; removing it from the index`)
    const dropped = new Set([...result.missing, ...result.deleted].map((b) => b.backup_id))
    if (dropped.size > 0) await updateIndex(cfg.BACKUP_DIR, (i) => void (i.backups = i.backups.filter((b) => !dropped.has(b.backup_id))))
    // The index forgets first: a crash in between leaves an unlisted file, never a listed hole.
    for (const expired of result.deleted) fs.rmSync(expired.file_path, { force: true })
    return result
  } finally {
    lock.release()
  }
}

export async function markVerified(cfg: Config, id: string, at: Date): Promise<void> {
  await updateIndex(cfg.BACKUP_DIR, (index) => {
    const record = findBackup(index, id)
    if (record) Object.assign(record, { verified: true, verified_at: isoSeconds(at) })
  })
}

export async function markFailed(cfg: Config, id: string): Promise<void> {
  await updateIndex(cfg.BACKUP_DIR, (index) => {
    const record = findBackup(index, id)
    if (record) Object.assign(record, { verified: false })
  })
}
