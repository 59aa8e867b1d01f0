import fs from 'node:fs'
import path from 'node:path'
import type { Config } from '../core/config.ts'
import { OpsError, messageOf, OffsiteError } from '../core/errors.ts'
import { formatAge, formatBytes, isoSeconds } from '../core/format.ts'
import { log } from '../core/log.ts'
import { dayjs } from '../core/time.ts'
import { recordOffsiteCopy } from '../core/metrics.ts'
import { notify } from '../core/notify.ts'
import { isDryRun } from '../core/shell.ts'
import { sha256OfFile } from '../core/streams.ts'
import { listRemoteBackups, pickRemoteBackup, type RemoteBackup, type RemoteCatalog } from './catalog.ts'
import { downloadBackup } from './download.ts'
import { macKeyFor, sidecarAuthenticity } from './mac.ts'
import type { OffsiteSettings } from '../core/offsite-config.ts'
import { localRecordFrom, signedContentOf } from './sidecar.ts'
import { uploadBackup, type OffsiteCopy } from './upload.ts'
import { BACKUP_ID, findBackup, foreignFileProblem, isFutureDated, isSafetyBackup, readIndex, updateIndex, type BackupRecord, type OffsiteFailureRecord } from '../db/backup-index.ts'

// The off-site copies as backup_index.json records them: what the rest of lib/offsite does to the
// bucket, for backup, restore and the drill. An off-site failure never costs a local backup:
// copyOffsite never throws.

/**
 * Copies one indexed backup off-site and records the outcome in the index. On failure it warns
 * (naming the cause and, for credentials, the variable), notifies, records `offsite_error`, and
 * returns the record with it: backup.ts turns that into exit 4, every other caller goes on.
 */
export async function copyOffsite(cfg: Config, settings: OffsiteSettings, record: BackupRecord): Promise<BackupRecord> {
  log.info(`Copying ${record.backup_id} off-site (encrypted) to ${settings.bucket}/${settings.prefix}`)
  let copy: OffsiteCopy
  try {
    copy = await uploadBackup(settings, record.file_path, record)
  } catch (error) {
    const failure = failureRecord(error)
    log.warn(`Off-site copy of ${record.backup_id} failed: ${failure.message}; the local backup is verified and indexed, and backup --offsite-sync (or the next scheduled backup) retries it`)
    await notify(cfg, `Off-site copy of backup ${record.backup_id} failed: ${failure.message}. The local backup is intact.`)
    if (!isDryRun()) await setOffsite(cfg, record.backup_id, { offsite_error: failure })
    return { ...record, offsite_error: failure }
  }
  if (isDryRun()) return record
  log.info(`Off-site copy verified: ${copy.key} (${copy.size} bytes encrypted)`)
  await setOffsite(cfg, record.backup_id, { offsite: copy, offsite_error: null })
  recordOffsiteCopy(cfg, { finishedAt: new Date(copy.uploaded_at), sizeBytes: copy.size })
  return { ...record, offsite: copy, offsite_error: null }
}

/** The failure as the index records it: the problem and a message that names the setting to fix. */
export function failureRecord(error: unknown): OffsiteFailureRecord {
  const problem = error instanceof OffsiteError ? error.problem : 'server'
  let message = messageOf(error)
  if (error instanceof OffsiteError && error.variable && !message.includes(error.variable)) message += ` (check ${error.variable})`
  return { at: isoSeconds(new Date()), problem, message }
}

async function setOffsite(cfg: Config, id: string, fields: Partial<Pick<BackupRecord, 'offsite' | 'offsite_error'>>): Promise<void> {
  await updateIndex(cfg.BACKUP_DIR, (index) => {
    const record = findBackup(index, id)
    if (record) Object.assign(record, fields)
  })
}

/** Indexed backups still to be copied: verified, on local disk, and without a verified copy. */
export function pendingOffsite(cfg: Config): BackupRecord[] {
  return readIndex(cfg.BACKUP_DIR).backups.filter((b) => b.verified && b.offsite === null && fs.existsSync(b.file_path))
}

export interface SyncResult {
  copied: BackupRecord[]
  failed: BackupRecord[]
}

/** backup --offsite-sync, and the catch-up before each scheduled backup. */
export async function syncOffsite(cfg: Config, settings: OffsiteSettings): Promise<SyncResult> {
  const pending = pendingOffsite(cfg)
  const result: SyncResult = { copied: [], failed: [] }
  log.info(pending.length ? `Off-site sync: ${pending.length} backup${pending.length === 1 ? '' : 's'} without a verified off-site copy` : 'Off-site sync: every backup has its off-site copy')
  for (const record of pending) {
    const after = await copyOffsite(cfg, settings, record)
    ;(after.offsite_error ? result.failed : result.copied).push(after)
  }
  return result
}

// ---- restore's side ----------------------------------------------------------------------------

export interface LocalCopy {
  file: string
  record: BackupRecord
}

/**
 * The backup restore.ts asked for (an id, or `latest`), as a verified file in BACKUP_DIR: the local
 * one when it is there and matches its checksum, else downloaded from the bucket (decrypted and
 * verified on the way) and recorded in the index. Returns null when off-site cannot help (it is off
 * and the backup is not local), for the caller's own "not found".
 */
export async function localCopyOf(cfg: Config, idOrLatest: string, options: { trustUnauthenticated?: boolean } = {}): Promise<LocalCopy | null> {
  const settings = cfg.offsite
  const index = readIndex(cfg.BACKUP_DIR)
  const latest = idOrLatest === 'latest'
  let record = latest ? newestOf(cfg, index.backups) : findBackup(index, idOrLatest)
  if (record && !latest) trustedExplicitly(cfg, record)
  let remote: RemoteBackup | null = null
  if (settings && (!record || latest)) {
    // `latest` is the newest in the index or the bucket, whichever is newer: an index that was lost
    // or rebuilt (a new droplet) knows fewer backups than the bucket does.
    let catalog: RemoteCatalog
    try {
      catalog = latest ? await trustedNewest(cfg, settings, withoutSafetyBackups(await catalogOf(settings))) : await catalogOf(settings)
    } catch (error) {
      // A bucket out of reach must not stand between the operator and a good local backup.
      if (!record) throw error
      log.warn(`The off-site copies cannot be listed (${messageOf(error)}); using the newest local backup, ${record.backup_id}`)
      catalog = { backups: [], unconfirmed: [], orphanSidecars: [], invalid: [] }
    }
    const candidate = pickRemoteOrNull(catalog, idOrLatest)
    if (candidate && !latest && isFutureDated(candidate.sidecar)) log.warn(`Off-site backup ${candidate.backupId} is dated ${candidate.sidecar.created_at}, after this droplet's clock; restoring it because it was named`)
    if (candidate && (!record || candidate.sidecar.created_at > record.created_at)) {
      remote = candidate
      // its record here may name a file not its own: then the download, in BACKUP_DIR, replaces it
      const known = findBackup(index, candidate.backupId)
      record = known && !foreignFileProblem(cfg.BACKUP_DIR, known) ? known : undefined
    }
    // neither here nor there: the error lists what the bucket holds
    if (!record && !candidate) pickRemoteBackup(catalog, idOrLatest, settings.bucket)
  }
  if (record && (await isIntactLocally(record, settings !== null))) return { file: record.file_path, record }
  if (!settings || (!record && !remote)) return null
  remote ??= pickRemoteBackup(await catalogOf(settings), record?.backup_id ?? idOrLatest, settings.bucket)
  return fetchIntoBackupDir(cfg, settings, remote, record, options.trustUnauthenticated ?? false)
}

/** A backup named by its id is used as named, unless its record points at a file not its own. */
export function trustedExplicitly(cfg: Config, record: BackupRecord): void {
  const problem = foreignFileProblem(cfg.BACKUP_DIR, record)
  if (problem) throw new OpsError('verify_failed', `Backup ${record.backup_id} in the index is not trusted: ${problem}; nothing was restored`)
  if (isFutureDated(record)) log.warn(`Backup ${record.backup_id} is dated ${record.created_at}, after this droplet's clock; restoring it because it was named`)
}

/**
 * The bucket's copies `latest` may pick, newest first: a copy dated after this droplet's clock, or
 * one this droplet's key did not sign (forged with the public key, altered, or older than
 * authentication) is passed over, named in a warning and a notification, until one that is
 * signed. A copy whose identity this droplet lacks is left for the download to name the key.
 */
async function trustedNewest(cfg: Config, settings: OffsiteSettings, catalog: RemoteCatalog): Promise<RemoteCatalog> {
  const backups = [...catalog.backups]
  const passedOver: string[] = []
  for (let newest = backups.at(-1); newest; newest = backups.at(-1)) {
    let problem: string | null = null
    if (isFutureDated(newest.sidecar)) problem = `dated ${newest.sidecar.created_at}, after this droplet's clock`
    else {
      const macKey = await macKeyFor(settings.identityFile, newest.sidecar.encryption.recipient)
      if (!macKey) break
      const verdict = sidecarAuthenticity(newest.sidecar, signedContentOf(newest.sidecar), macKey)
      if (verdict.authentic) break
      problem = `not authentic: ${verdict.reason}`
    }
    passedOver.push(`${newest.backupId} (${problem})`)
    backups.pop()
  }
  if (passedOver.length) {
    const using = backups.at(-1)
    const text = `Off-site copies passed over as the newest: ${passedOver.join('; ')}. ${using ? `Using ${using.backupId}.` : 'No other copy is left to use.'}`
    log.warn(text)
    await notify(cfg, text)
  }
  return { ...catalog, backups }
}

/**
 * `latest` never means a safety backup (`manual` with a `reason`: the database a restore or rollback
 * replaced). On a new droplet, `restore latest` itself leaves one, of the empty database it replaced:
 * it must not become the backup the next `restore latest` or the weekly drill picks. A
 * pre-deployment backup has a reason too ("before deploying v1.2.0") but is a copy of the live
 * data like a scheduled one, often the newest there is.
 */
export function newestOf(cfg: Config, backups: BackupRecord[], options: { safetyBackups?: boolean } = {}): BackupRecord | undefined {
  const candidates = backups.filter((b) => options.safetyBackups || !isSafetyBackup(b)).sort((a, b) => a.created_at.localeCompare(b.created_at) || a.backup_id.localeCompare(b.backup_id))
  // Never silently: a record dated ahead of the clock, or pointing at a file not its own, is named.
  for (let newest = candidates.at(-1); newest; newest = candidates.at(-1)) {
    const problem = isFutureDated(newest) ? `it is dated ${newest.created_at}, after this droplet's clock` : foreignFileProblem(cfg.BACKUP_DIR, newest)
    if (!problem) return newest
    log.warn(`Backup ${newest.backup_id} is passed over as the newest: ${problem}`)
    candidates.pop()
  }
  return undefined
}

async function catalogOf(settings: OffsiteSettings): Promise<RemoteCatalog> {
  try {
    return await listRemoteBackups(settings)
  } catch (error) {
    if (error instanceof OffsiteError) throw error
    throw new OffsiteError('server', `Listing the off-site backups failed: ${messageOf(error)}`, { cause: error })
  }
}

function withoutSafetyBackups(catalog: RemoteCatalog): RemoteCatalog {
  return { ...catalog, backups: catalog.backups.filter((b) => !isSafetyBackup(b.sidecar.record)) }
}

function pickRemoteOrNull(catalog: RemoteCatalog, idOrLatest: string): RemoteBackup | null {
  try {
    return pickRemoteBackup(catalog, idOrLatest, '')
  } catch (error) {
    if (error instanceof OffsiteError && error.problem === 'not_found') return null
    throw error
  }
}

/**
 * The local file is there with its recorded size and, when a good copy could be fetched instead,
 * its recorded sha256 (one read, from disk: cheaper than finding out halfway through the restore).
 */
async function isIntactLocally(record: BackupRecord, canFetch: boolean): Promise<boolean> {
  if (isDryRun()) return fs.existsSync(record.file_path) || !canFetch
  let size: number
  try {
    size = fs.statSync(record.file_path).size
  } catch {
    if (canFetch) log.warn(`Backup ${record.backup_id} is not on local disk (${record.file_path}); fetching its off-site copy`)
    return false
  }
  if (!canFetch) return true
  if (size === record.file_size_bytes) {
    log.info(`Checking the local copy of ${record.backup_id} against its recorded checksum`)
    if ((await sha256OfFile(record.file_path)) === record.sha256) return true
  }
  log.warn(`The local copy of ${record.backup_id} (${record.file_path}) does not match its recorded checksum; fetching its off-site copy`)
  return false
}

/** Downloads, decrypts and verifies a copy into BACKUP_DIR and records it in the index. */
async function fetchIntoBackupDir(cfg: Config, settings: OffsiteSettings, remote: RemoteBackup, known: BackupRecord | undefined, trustUnauthenticated: boolean): Promise<LocalCopy> {
  if (!BACKUP_ID.test(remote.backupId)) throw new OffsiteError('verify', `Off-site key ${remote.key} does not name a backup id`)
  if (!isDryRun()) fs.mkdirSync(cfg.BACKUP_DIR, { recursive: true, mode: 0o700 })
  // The file name comes from the (validated) id, never from the bucket's sidecar nor the index.
  const file = path.join(cfg.BACKUP_DIR, `${remote.backupId}.sql.gz`)
  log.info(`Downloading off-site backup ${remote.backupId} from ${settings.bucket}/${remote.key} (${remote.size} bytes encrypted)`)
  // A damaged local file of this name has just been found useless: the verified download replaces it.
  await downloadBackup(settings, remote.key, file, { overwrite: fs.existsSync(file), trustUnauthenticated })
  const copy: OffsiteCopy = { key: remote.key, uploaded_at: remote.sidecar.uploaded_at, size: remote.sidecar.ciphertext.size, sha256: remote.sidecar.ciphertext.sha256 }
  const record: BackupRecord = { ...(known ?? localRecordFrom(remote.sidecar, file)), file_path: file, offsite: copy, offsite_error: null }
  if (isDryRun()) return { file, record }
  log.info(`Off-site backup ${remote.backupId} downloaded, decrypted and verified: ${file}`)
  await updateIndex(cfg.BACKUP_DIR, (index) => {
    const existing = findBackup(index, record.backup_id)
    if (existing) Object.assign(existing, { file_path: file, offsite: copy, offsite_error: null })
    else index.backups.push(record)
  })
  return { file, record }
}

/** restore --drill --offsite: the newest off-site copy, downloaded into `dir` (the caller removes it). */
export async function downloadForDrill(cfg: Config, settings: OffsiteSettings, dir: string): Promise<LocalCopy> {
  const remote = pickRemoteBackup(await trustedNewest(cfg, settings, withoutSafetyBackups(await catalogOf(settings))), 'latest', settings.bucket)
  const file = path.join(dir, `${remote.backupId}.sql.gz`)
  log.info(`Downloading the newest off-site backup ${remote.backupId} from ${settings.bucket}/${remote.key}`)
  await downloadBackup(settings, remote.key, file, { overwrite: true })
  const known = findBackup(readIndex(cfg.BACKUP_DIR), remote.backupId)
  return { file, record: { ...(known ?? localRecordFrom(remote.sidecar, file)), file_path: file } }
}

// ---- backup --list -----------------------------------------------------------------------------

export interface ListedBackup {
  backup_id: string
  backup_type: string
  created_at: string
  size_bytes: number
  /** dated after this droplet's clock (and its skew): never `latest` without a warning */
  future_dated: boolean
  /** local: only in BACKUP_DIR; off-site: only in the bucket; both; missing: indexed, file gone, not in the bucket */
  where: 'local' | 'off-site' | 'both' | 'missing'
  verified: boolean
  last_drill: BackupRecord['last_drill']
  offsite_key: string | null
  offsite_error: string | null
}

/**
 * One row per backup, from the index and (when given) the bucket's complete copies, oldest first.
 * `remote` null: off-site is off, or the listing failed (the caller says which).
 */
export function mergeListing(local: BackupRecord[], remote: RemoteBackup[] | null, exists: (file: string) => boolean = fs.existsSync): ListedBackup[] {
  const rows = new Map<string, ListedBackup>()
  const inBucket = new Map((remote ?? []).map((r) => [r.backupId, r]))
  for (const record of local) {
    const here = exists(record.file_path)
    const there = inBucket.get(record.backup_id)
    rows.set(record.backup_id, {
      backup_id: record.backup_id,
      backup_type: record.backup_type,
      created_at: record.created_at,
      future_dated: isFutureDated(record),
      size_bytes: record.file_size_bytes,
      where: here ? (there ? 'both' : 'local') : there ? 'off-site' : 'missing',
      verified: record.verified,
      last_drill: record.last_drill,
      offsite_key: there?.key ?? null,
      offsite_error: there ? null : (record.offsite_error?.message ?? null),
    })
  }
  for (const copy of remote ?? []) {
    if (rows.has(copy.backupId)) continue
    const drill = copy.sidecar.record.last_drill as BackupRecord['last_drill'] | undefined
    rows.set(copy.backupId, {
      backup_id: copy.backupId,
      backup_type: copy.sidecar.backup_type,
      created_at: copy.sidecar.created_at,
      future_dated: isFutureDated(copy.sidecar),
      size_bytes: copy.sidecar.plaintext.size,
      where: 'off-site',
      // verified when it was made, and its checksums since by the server and the sidecar
      verified: copy.sidecar.record.verified === true,
      last_drill: drill ?? null,
      offsite_key: copy.key,
      offsite_error: null,
    })
  }
  return [...rows.values()].sort((a, b) => a.created_at.localeCompare(b.created_at) || a.backup_id.localeCompare(b.backup_id))
}

/** The bucket's complete copies, or null (with the reason) when it cannot be listed. */
export async function remoteBackupsOrReason(settings: OffsiteSettings): Promise<{ backups: RemoteBackup[] } | { failure: string }> {
  try {
    return { backups: (await catalogOf(settings)).backups }
  } catch (error) {
    return { failure: failureRecord(error).message }
  }
}

/** backup --list: one aligned line per backup. */
export function listingTable(rows: ListedBackup[], now: Date): string {
  const header = ['BACKUP ID', 'TYPE', 'SIZE', 'AGE', 'WHERE', 'VERIFIED', 'LAST DRILL']
  const lines = rows.map((r) => [
    r.backup_id,
    r.backup_type,
    formatBytes(r.size_bytes),
    isFutureDated(r, now) ? 'FUTURE-DATED' : formatAge(dayjs.utc(now).diff(r.created_at, 'second', true)),
    r.where,
    r.verified ? 'yes' : 'no',
    r.last_drill ? `${r.last_drill.outcome} ${r.last_drill.at.slice(0, 10)}` : '-',
  ])
  if (!lines.length) return 'No backups\n'
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)))
  return [header, ...lines].map((cols) => cols.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n') + '\n'
}
