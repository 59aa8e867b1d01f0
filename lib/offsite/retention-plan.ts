import type { PendingUpload } from './bucket.ts'
import { parseKey, type ListedObject } from './keys.ts'
import { outsideRetention } from '../core/retention.ts'

// The decisions of remote retention, apart from the calls that carry them out.

export interface RetentionRule {
  /** the newest this many copies are kept whatever their age */
  count: number
  /** copies younger than this are kept whatever their number */
  days: number
}

const DAY_MS = 24 * 3600_000

/**
 * The union rule (lib/core/retention.ts) on the bucket's copies: the newest copy is kept even if
 * both limits would allow deleting everything.
 * `backups` are complete, verified copies; the expired come back oldest first.
 */
export function chooseRemoteExpired<T extends { backupId: string; createdAt: string }>(backups: T[], rule: RetentionRule, now: Date): T[] {
  const newestFirst = [...backups].sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.backupId.localeCompare(a.backupId))
  const newest = newestFirst[0]?.backupId
  const cutoff = now.getTime() - rule.days * DAY_MS
  // oldest first: should a delete fail, what remains is the newer half
  return outsideRetention(newestFirst, { count: rule.count, expired: (b) => Date.parse(b.createdAt) < cutoff, protected: (b) => b.backupId === newest }).reverse()
}

/**
 * Leftovers of runs that stopped halfway (an object without its sidecar, a sidecar without its
 * object), once they are old enough that no run can still be about to finish them.
 */
export function chooseStaleObjects(objects: ListedObject[], now: Date, staleAfterMs: number): ListedObject[] {
  return objects.filter((o) => now.getTime() - o.lastModified.getTime() >= staleAfterMs)
}

/**
 * Incomplete multipart uploads this toolkit started (keys it names, under its prefix), old enough
 * that the run which started them is over. Anything else under the prefix is someone else's.
 */
export function chooseStaleUploads(uploads: PendingUpload[], prefix: string, now: Date, staleAfterMs: number): PendingUpload[] {
  return uploads.filter((u) => parseKey(prefix, u.key)?.role === 'data' && now.getTime() - u.initiated.getTime() >= staleAfterMs)
}
