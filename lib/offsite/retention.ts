import type { S3Client } from '@aws-sdk/client-s3'
import { messageOf, OffsiteError } from '../core/errors.ts'
import { isDryRun } from '../core/shell.ts'
import { abortUpload, deleteObject, listUploads, type Bucket, type PendingUpload } from './bucket.ts'
import { listRemoteBackups, type RemoteBackup, type RemoteCatalog } from './catalog.ts'
import type { ListedObject } from './keys.ts'
import { chooseRemoteExpired, chooseStaleObjects, chooseStaleUploads } from './retention-plan.ts'
import { createS3Client } from './s3.ts'
import type { OffsiteSettings } from '../core/offsite-config.ts'

export interface RemoteRetentionOptions {
  client?: S3Client
  now?: Date
  /** how old a leftover (object without sidecar, incomplete upload) must be before it is removed */
  staleAfterMs?: number
  pageSize?: number
}

export interface RemoteRetentionResult {
  /** complete copies deleted by the rule */
  deleted: RemoteBackup[]
  /** complete copies kept */
  kept: RemoteBackup[]
  /** leftovers of interrupted runs that were removed */
  removedLeftovers: ListedObject[]
  abortedUploads: PendingUpload[]
  /** what could not be done and was left for the next run, in words */
  warnings: string[]
}

// A day: the backup lock keeps this droplet from running two uploads at once, and a day is longer
// than any upload, so a leftover that old is nobody's upload in progress.
const DEFAULT_STALE_AFTER_MS = 24 * 3600_000

/**
 * Remote retention. Everything is decided from one complete listing: a listing that fails deletes
 * nothing. Deletes go one key at a time, sidecar first (a copy stops being listed as good before
 * its object goes); the first delete that fails stops the run, and the error says what was deleted.
 */
export async function applyRemoteRetention(settings: OffsiteSettings, options: RemoteRetentionOptions = {}): Promise<RemoteRetentionResult> {
  const bucket: Bucket = { client: options.client ?? createS3Client(settings), settings }
  const now = options.now ?? new Date()
  const staleAfterMs = options.staleAfterMs ?? DEFAULT_STALE_AFTER_MS
  let catalog: RemoteCatalog
  try {
    catalog = await listRemoteBackups(settings, { client: bucket.client, ...(options.pageSize ? { pageSize: options.pageSize } : {}) })
  } catch (error) {
    throw withPrefix(error, 'Off-site retention: the listing failed, so nothing was deleted')
  }
  const candidates = catalog.backups.map((b) => ({ ...b, createdAt: b.sidecar.created_at }))
  const expired = chooseRemoteExpired(candidates, settings.retention, now)
  const expiredIds = new Set(expired.map((b) => b.backupId))
  const leftovers = chooseStaleObjects([...catalog.unconfirmed, ...catalog.orphanSidecars], now, staleAfterMs)
  const result: RemoteRetentionResult = {
    deleted: [],
    kept: catalog.backups.filter((b) => !expiredIds.has(b.backupId)),
    removedLeftovers: [],
    abortedUploads: [],
    warnings: catalog.invalid.map((i) => `Off-site ${i.key} is not a usable copy and was left alone: ${i.problem}`),
  }
  if (isDryRun()) {
    for (const b of expired) process.stdout.write(`[dry-run] delete ${settings.bucket}/${b.sidecarKey} and ${b.key}\n`)
    for (const o of leftovers) process.stdout.write(`[dry-run] delete ${settings.bucket}/${o.key}\n`)
    result.deleted = catalog.backups.filter((b) => expiredIds.has(b.backupId))
    return result
  }

  const planned = expired.length + leftovers.length
  let done = 0
  const stopped = (error: unknown) =>
    withPrefix(error, `Off-site retention stopped after deleting ${done} of ${planned} planned (${result.deleted.map((b) => b.backupId).join(', ') || 'none'}); the rest are kept`)
  for (const copy of expired) {
    try {
      await deleteObject(bucket, copy.sidecarKey)
      await deleteObject(bucket, copy.key)
    } catch (error) {
      throw stopped(error)
    }
    result.deleted.push(copy)
    done++
  }
  for (const leftover of leftovers) {
    try {
      await deleteObject(bucket, leftover.key)
    } catch (error) {
      throw stopped(error)
    }
    result.removedLeftovers.push(leftover)
    done++
  }

  // Parts of an upload that never completed are stored (and billed) until aborted.
  let uploads: PendingUpload[]
  try {
    uploads = await listUploads(bucket)
  } catch (error) {
    const notImplemented = error instanceof OffsiteError && /NotImplemented/.test(error.message)
    result.warnings.push(
      notImplemented
        ? 'The server cannot list incomplete multipart uploads (NotImplemented); a lifecycle rule on the bucket should expire them'
        : `Incomplete multipart uploads were not checked: ${messageOf(error)}`,
    )
    return result
  }
  for (const upload of chooseStaleUploads(uploads, settings.prefix, now, staleAfterMs)) {
    try {
      await abortUpload(bucket, upload)
      result.abortedUploads.push(upload)
    } catch (error) {
      result.warnings.push(`Could not abort the incomplete upload of ${upload.key}: ${messageOf(error)}`)
      break
    }
  }
  return result
}

function withPrefix(error: unknown, prefix: string): OffsiteError {
  if (error instanceof OffsiteError) {
    return new OffsiteError(error.problem, `${prefix}: ${error.message}`, error.variable ? { cause: error, variable: error.variable } : { cause: error })
  }
  return new OffsiteError('server', `${prefix}: ${messageOf(error)}`, { cause: error })
}
