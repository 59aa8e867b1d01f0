import { describe, expect, it } from 'vitest'
import { notInBackupClause, selectNotInBackup } from '../../lib/db/data-export.ts'

// Which rows of a table a backup does not hold: by transaction id within one cluster (no clock can
// drift), by timestamp where ids cannot be compared, and every row where neither can tell.
const withTs = { table: 'public.orders', timestampColumn: 'created_at' }
const noTs = { table: 'public.ledger', timestampColumn: null }
const at = '2026-12-02T10:00:00Z'
const cluster = { id: '7300000000000000001', nextXid: 900 }

describe('rows a backup does not hold', () => {
  it('same cluster, snapshot recorded: transaction ids only, whatever the table has', () => {
    const backup = { created_at: at, snapshot: '795:800:795,797', cluster_id: cluster.id }
    for (const table of [withTs, noTs]) {
      const clause = notInBackupClause(backup, table, cluster)
      expect(clause).toMatch(/^NOT txid_visible_in_snapshot\(.*, '795:800:795,797'::txid_snapshot\)$/)
      expect(clause).not.toContain('created_at')
    }
  })

  it('another cluster (a new droplet): ids mean nothing there, so timestamps, or every row', () => {
    const backup = { created_at: at, snapshot: '795:800:', cluster_id: '1111' }
    expect(notInBackupClause(backup, withTs, cluster)).toBe(`t.created_at >= '${at}'::timestamptz`)
    expect(notInBackupClause(backup, noTs, cluster)).toBe('true')
  })

  it('a server whose transaction counter is behind the snapshot is another server too', () => {
    const backup = { created_at: at, snapshot: '5000000:5000010:', cluster_id: null }
    expect(notInBackupClause(backup, noTs, { id: null, nextXid: 900 })).toBe('true')
  })

  it('cluster unknown (no rights to read it): both, so neither failure can drop a row', () => {
    const backup = { created_at: at, snapshot: '795:800:', cluster_id: null }
    const clause = notInBackupClause(backup, withTs, { id: null, nextXid: 900 })
    expect(clause).toMatch(/^NOT txid_visible_in_snapshot\(.*\) OR t\.created_at >= /)
  })

  it('a backup from before snapshots were recorded: its time', () => {
    expect(notInBackupClause({ created_at: at, snapshot: null, cluster_id: null }, withTs, cluster)).toBe(`t.created_at >= '${at}'::timestamptz`)
    expect(notInBackupClause({ created_at: at, snapshot: null, cluster_id: null }, noTs, cluster)).toBe('true')
  })

  it("the row's 32-bit xmin is widened with the epoch of the current transaction counter", () => {
    const sql = selectNotInBackup(noTs, 'true', 'rows')
    expect(sql).toBe('WITH now_xid AS (SELECT txid_snapshot_xmax(txid_current_snapshot()) AS next) SELECT t.* FROM public.ledger t, now_xid WHERE true')
    expect(selectNotInBackup(noTs, 'true', 'count')).toContain('SELECT count(*)::bigint FROM public.ledger t')
  })
})
