import type { S3Client } from '@aws-sdk/client-s3'
import { messageOf, OffsiteError } from '../core/errors.ts'
import { listObjects, readSidecar, sidecarMismatch, type Bucket } from './bucket.ts'
import { pairListing, type ListedObject } from './keys.ts'
import { createS3Client } from './s3.ts'
import type { OffsiteSettings } from '../core/offsite-config.ts'
import type { Sidecar } from './sidecar.ts'

// What the bucket holds, from the bucket alone: a new droplet with an empty BACKUP_DIR sees the same.
export interface RemoteBackup {
  backupId: string
  key: string
  sidecarKey: string
  size: number
  lastModified: Date
  sidecar: Sidecar
}

export interface RemoteCatalog {
  /** complete, verified copies (an object and the sidecar that matches it), oldest first */
  backups: RemoteBackup[]
  /** objects whose upload never reached its sidecar: not good copies */
  unconfirmed: ListedObject[]
  /** sidecars whose object is gone */
  orphanSidecars: ListedObject[]
  /** pairs whose sidecar cannot be read or does not match its object: kept, never trusted */
  invalid: { key: string; problem: string }[]
}

export interface CatalogOptions {
  client?: S3Client
  /** keys per listing page (S3's maximum is 1000) */
  pageSize?: number
}

export async function listRemoteBackups(settings: OffsiteSettings, options: CatalogOptions = {}): Promise<RemoteCatalog> {
  const bucket: Bucket = { client: options.client ?? createS3Client(settings), settings }
  const listed = pairListing(settings.prefix, await listObjects(bucket, options.pageSize))
  const catalog: RemoteCatalog = { backups: [], unconfirmed: listed.unconfirmed, orphanSidecars: listed.orphanSidecars, invalid: [] }
  for (const pair of listed.pairs) {
    let sidecar: Sidecar | null
    try {
      sidecar = await readSidecar(bucket, pair.sidecar.key)
    } catch (error) {
      // A sidecar the server will not return is a listing that failed; one that says nonsense is
      // a bad entry the listing reports and goes on.
      if (error instanceof OffsiteError && error.problem === 'verify') {
        catalog.invalid.push({ key: pair.data.key, problem: error.message })
        continue
      }
      throw error
    }
    if (!sidecar) {
      catalog.unconfirmed.push(pair.data)
      continue
    }
    const problem = sidecarMismatch(sidecar, pair.data, pair.data.key)
    if (problem) catalog.invalid.push({ key: pair.data.key, problem })
    else catalog.backups.push({ backupId: pair.backupId, key: pair.data.key, sidecarKey: pair.sidecar.key, size: pair.data.size, lastModified: pair.data.lastModified, sidecar })
  }
  catalog.backups.sort((a, b) => a.sidecar.created_at.localeCompare(b.sidecar.created_at) || a.backupId.localeCompare(b.backupId))
  return catalog
}

/** The copy restore.ts asks for: a backup id, or `latest` for the newest complete one. */
export function pickRemoteBackup(catalog: RemoteCatalog, idOrLatest: string, bucketName: string): RemoteBackup {
  const found = idOrLatest === 'latest' ? catalog.backups.at(-1) : catalog.backups.find((b) => b.backupId === idOrLatest)
  if (found) return found
  const known = catalog.backups.map((b) => b.backupId)
  const listed = known.length ? `; it holds: ${known.slice(-10).join(', ')}` : '; it holds no complete backup'
  const what = idOrLatest === 'latest' ? 'No off-site backup' : `No off-site backup ${idOrLatest}`
  throw new OffsiteError('not_found', `${what} in bucket ${bucketName}${listed}`)
}

export async function findRemoteBackup(settings: OffsiteSettings, idOrLatest: string, options: CatalogOptions = {}): Promise<RemoteBackup> {
  try {
    return pickRemoteBackup(await listRemoteBackups(settings, options), idOrLatest, settings.bucket)
  } catch (error) {
    if (error instanceof OffsiteError) throw error
    throw new OffsiteError('server', `Listing the off-site backups failed: ${messageOf(error)}`, { cause: error })
  }
}
