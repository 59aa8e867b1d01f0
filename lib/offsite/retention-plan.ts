import type { PendingUpload } from './bucket.ts'
import { parseKey, type ListedObject } from './keys.ts'
import { outsideRetention } from '../core/retention.ts'
import { dayjs } from '../core/time.ts'

// The decisions of remote retention, apart from the calls that carry them out.

export interface RetentionRule {
  /** the newest this many copies are kept whatever their age */
  count: number
  /** copies younger than this are kept whatever their number */
  days: number
}

/**
 * The union rule (lib/core/retention.ts) on the bucket's copies: the newest copy is kept even if
 * both limits would allow deleting everything.
 * `backups` are complete, verified copies; the expired come back oldest first.
 */
export function chooseRemoteExpired<T extends { backupId: string; createdAt: string }>(backups: T[], rule: RetentionRule, now: Date): T[] {
  const newestFirst = [...backups].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.backupId.localeCompare(a.backupId))
  const newest = newestFirst[0]?.backupId
  const cutoff = dayjs.utc(now).subtract(rule.days, 'day')
  // oldest first: should a delete fail, what remains is the newer half
  return outsideRetention(newestFirst, { count: rule.count, expired: (b) => dayjs.utc(b.createdAt).isBefore(cutoff), protected: (b) => b.backupId === newest }).reverse()
}

/**
 * Leftovers of runs that stopped halfway (an object without its sidecar, a sidecar without its
 * object), once they are old enough that no run can still be about to finish them.
 */
export function chooseStaleObjects(objects: ListedObject[], now: Date, staleAfterMs: number): ListedObject[] {
  return objects.filter((o) => dayjs.utc(now).diff(o.lastModified) >= staleAfterMs)
}

/**
 * Incomplete multipart uploads this toolkit started (keys it names, under its prefix), old enough
 * that the run which started them is over. Anything else under the prefix is someone else's.
 */
export function chooseStaleUploads(uploads: PendingUpload[], prefix: string, now: Date, staleAfterMs: number): PendingUpload[] {
  return uploads.filter((u) => parseKey(prefix, u.key)?.role === 'data' && dayjs.utc(now).diff(u.initiated) >= staleAfterMs)
}
