// The union rule of every retention: local backups (BACKUP_RETENTION_COUNT/DAYS), off-site copies
// (OFFSITE_RETENTION_COUNT/DAYS) and release images (KEEP_RELEASES, RELEASE_RETENTION_DAYS). An
// item goes only when it is outside the newest `count` AND past its age limit: both limits must
// agree before anything is deleted. A protected item (the newest good backup, the running release)
// stays whatever both say.
export interface Retention<T> {
  /** the newest this many are kept whatever their age */
  count: number
  /** past its age limit */
  expired: (item: T) => boolean
  protected: (item: T) => boolean
}

/** `newestFirst`: the caller's order decides which are "the newest". The result keeps that order. */
export function outsideRetention<T>(newestFirst: readonly T[], rule: Retention<T>): T[] {
  return newestFirst.slice(rule.count).filter((item) => rule.expired(item) && !rule.protected(item))
}
