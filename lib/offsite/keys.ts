import { BACKUP_ID } from '../db/backup-index.ts'

// One backup in the bucket is two objects: the encrypted dump and, written only once the dump
// was verified on the server, its sidecar `<key>.json`. Naming both from the backup id alone lets a
// new droplet with an empty BACKUP_DIR find everything by listing the prefix.
export const DATA_SUFFIX = '.sql.gz.age'
export const SIDECAR_SUFFIX = '.json'

export function dataKey(prefix: string, backupId: string): string {
  return `${prefix}${backupId}${DATA_SUFFIX}`
}

export function sidecarKey(key: string): string {
  return `${key}${SIDECAR_SUFFIX}`
}

export type KeyRole = { role: 'data' | 'sidecar'; backupId: string; dataKey: string }

/** What a key under the prefix is to us; null for anything this toolkit did not name. */
export function parseKey(prefix: string, key: string): KeyRole | null {
  if (!key.startsWith(prefix)) return null
  let rest = key.slice(prefix.length)
  let role: KeyRole['role'] = 'data'
  if (rest.endsWith(SIDECAR_SUFFIX)) {
    role = 'sidecar'
    rest = rest.slice(0, -SIDECAR_SUFFIX.length)
  }
  if (!rest.endsWith(DATA_SUFFIX)) return null
  const backupId = rest.slice(0, -DATA_SUFFIX.length)
  if (!BACKUP_ID.test(backupId)) return null
  return { role, backupId, dataKey: dataKey(prefix, backupId) }
}

export interface ListedObject {
  key: string
  size: number
  lastModified: Date
}

export interface PairedListing {
  /** a data object and its sidecar object, by backup id */
  pairs: { backupId: string; data: ListedObject; sidecar: ListedObject }[]
  /** data objects without a sidecar: an upload that never finished verifying */
  unconfirmed: ListedObject[]
  /** sidecars whose data object is gone: a deletion that stopped halfway */
  orphanSidecars: ListedObject[]
}

/** Groups a listing of the prefix into backups; keys this toolkit did not name are left out. */
export function pairListing(prefix: string, objects: ListedObject[]): PairedListing {
  const data = new Map<string, ListedObject>()
  const sidecars = new Map<string, ListedObject>()
  for (const object of objects) {
    const parsed = parseKey(prefix, object.key)
    if (parsed) (parsed.role === 'data' ? data : sidecars).set(parsed.backupId, object)
  }
  const result: PairedListing = { pairs: [], unconfirmed: [], orphanSidecars: [] }
  for (const [backupId, object] of data) {
    const sidecar = sidecars.get(backupId)
    if (sidecar) result.pairs.push({ backupId, data: object, sidecar })
    else result.unconfirmed.push(object)
  }
  for (const [backupId, sidecar] of sidecars) if (!data.has(backupId)) result.orphanSidecars.push(sidecar)
  result.pairs.sort((a, b) => a.backupId.localeCompare(b.backupId))
  return result
}
