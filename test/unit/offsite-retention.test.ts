import { describe, expect, it } from 'vitest'
import { chooseRemoteExpired, chooseStaleObjects, chooseStaleUploads } from '../../lib/offsite/retention-plan.ts'

const NOW = new Date('2026-12-31T12:00:00Z')
const DAY = 24 * 3600_000

/** one copy a day, the newest made `newestDaysAgo` days ago, newest first in the returned ids */
function daily(count: number, newestDaysAgo = 0): { backupId: string; createdAt: string }[] {
  return Array.from({ length: count }, (_, i) => {
    const created = new Date(NOW.getTime() - (newestDaysAgo + i) * DAY)
    const stamp = created.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '_')
    return { backupId: `shop_${stamp}`, createdAt: created.toISOString().slice(0, 19) + 'Z' }
  })
}

const ids = (list: { backupId: string }[]) => list.map((b) => b.backupId)
/** the expected expired copies, oldest first as they are deleted */
const oldestFirst = (list: { backupId: string }[]) => ids(list).reverse()

describe('chooseRemoteExpired (the union rule)', () => {
  it('deletes only what is outside the newest COUNT and older than DAYS', () => {
    const copies = daily(40) // 0..39 days old
    const expired = chooseRemoteExpired(copies, { count: 14, days: 30 }, NOW)
    // days 0-13 are the newest 14; of the rest only those past 30 days go: days 31..39
    expect(ids(expired)).toEqual(oldestFirst(copies.slice(31)))
  })

  it('keeps old copies while they are within the newest COUNT', () => {
    const copies = daily(10, 100) // all over 100 days old
    expect(chooseRemoteExpired(copies, { count: 14, days: 30 }, NOW)).toEqual([])
    expect(ids(chooseRemoteExpired(copies, { count: 4, days: 30 }, NOW))).toEqual(oldestFirst(copies.slice(4)))
  })

  it('keeps many copies while they are younger than DAYS', () => {
    const copies = daily(25) // 0..24 days old
    expect(chooseRemoteExpired(copies, { count: 3, days: 30 }, NOW)).toEqual([])
  })

  it('never deletes the newest copy, even with a rule that would allow it', () => {
    const copies = daily(3, 400)
    expect(ids(chooseRemoteExpired(copies, { count: 0, days: 1 }, NOW))).toEqual(oldestFirst(copies.slice(1)))
  })

  it('decides by creation time, not by the order it was given', () => {
    const copies = daily(20, 40)
    const shuffled = [...copies].reverse()
    expect(ids(chooseRemoteExpired(shuffled, { count: 5, days: 30 }, NOW))).toEqual(oldestFirst(copies.slice(5)))
  })
})

describe('leftovers of interrupted runs', () => {
  it('removes objects without their other half only once they are old enough', () => {
    const fresh = { key: 'p/shop_20261231_110000.sql.gz.age', size: 1, lastModified: new Date(NOW.getTime() - 3600_000) }
    const old = { key: 'p/shop_20261229_110000.sql.gz.age', size: 1, lastModified: new Date(NOW.getTime() - 2 * DAY) }
    expect(chooseStaleObjects([fresh, old], NOW, DAY)).toEqual([old])
    expect(chooseStaleObjects([fresh, old], NOW, 0)).toEqual([fresh, old])
  })

  it('aborts only incomplete uploads of keys this toolkit names, under its prefix, once stale', () => {
    const ours = { key: 'p/shop_20261229_110000.sql.gz.age', uploadId: 'a', initiated: new Date(NOW.getTime() - 2 * DAY) }
    const young = { key: 'p/shop_20261231_110000.sql.gz.age', uploadId: 'b', initiated: new Date(NOW.getTime() - 60_000) }
    const foreign = { key: 'p/someone-elses-video.mp4', uploadId: 'c', initiated: new Date(0) }
    const elsewhere = { key: 'q/shop_20261229_110000.sql.gz.age', uploadId: 'd', initiated: new Date(0) }
    expect(chooseStaleUploads([ours, young, foreign, elsewhere], 'p/', NOW, DAY)).toEqual([ours])
  })
})
