import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadConfig } from '../../lib/core/config.ts'
import { exportRowsNotIn } from '../../lib/db/data-export.ts'
import { dbFromConfig } from '../../lib/commands/postgres.ts'
import { postgresBinDir, startCluster, type Cluster } from '../support/pg-cluster.ts'
import { runScript, tempDir } from '../support/scripts.ts'

// Rows committed while pg_dump runs are in the dump or in the export of "rows the backup does not
// hold", never in neither: the cut is the snapshot the backup recorded, not the time it finished.
let cluster: Cluster
let env: Record<string, string>

beforeAll(async () => {
  cluster = await startCluster()
  await cluster.query('CREATE DATABASE shop')
  // No created_at anywhere: only transaction ids can tell old rows from new ones.
  await cluster.query('CREATE TABLE orders (id bigint PRIMARY KEY, note text NOT NULL)', 'shop')
  await cluster.query(`CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS pad FROM generate_series(1, 400000) g`, 'shop')
  const work = tempDir('ttg-export-')
  env = { DB_MODE: 'url', DATABASE_URL: cluster.adminUrl('shop'), BACKUP_DIR: path.join(work, 'backups'), LOG_FILE: path.join(work, 'deployment.log'), DEPLOY_DIR: work, APP_SERVICES: '', MIN_FREE_DISK_MB: '1' }
})
afterAll(() => cluster?.stop())

describe('the export of rows a backup does not hold', () => {
  it('every order committed before, during and after a long dump is in the backup or in the export', async () => {
    const client = new pg.Client({ connectionString: cluster.adminUrl('shop') })
    await client.connect()
    const committed: number[] = []
    let writing = true
    const writer = (async () => {
      for (let id = 1; writing; id++) {
        await client.query('INSERT INTO orders VALUES ($1, $2)', [id, `order ${id}`])
        committed.push(id)
        await new Promise((r) => setTimeout(r, 5))
      }
    })()
    await new Promise((r) => setTimeout(r, 300))
    const backup = await runScript('backup', ['--json'], env)
    await new Promise((r) => setTimeout(r, 300))
    await client.query(`UPDATE orders SET note = 'changed' WHERE id = 1`)
    writing = false
    await writer
    await client.end()
    expect(backup.code, backup.stderr).toBe(0)
    const record = JSON.parse(backup.stdout)
    expect(record.snapshot).toMatch(/^\d+:\d+:/)

    await cluster.query('CREATE DATABASE shop_copy', 'postgres')
    const bin = postgresBinDir()
    const load = spawnSync('bash', ['-o', 'pipefail', '-c', `gunzip -c "$1" | "$2" -q -v ON_ERROR_STOP=1 "$3" >/dev/null`, '_', record.file_path, path.join(bin, 'psql'), cluster.adminUrl('shop_copy')], { encoding: 'utf8' })
    expect(load.status, load.stderr).toBe(0)
    const inBackup = new Set((await cluster.query<{ id: string }>('SELECT id FROM orders', 'shop_copy')).map((r) => Number(r.id)))

    const dir = path.join(env.BACKUP_DIR!, 'exports', 'test')
    const counts = await exportRowsNotIn(dbFromConfig(loadConfig(env), null), 'shop', record, dir)
    const exported = fs.readFileSync(path.join(dir, 'public.orders.csv'), 'utf8').trim().split('\n').slice(1).map((l) => Number(l.split(',')[0]))

    const lost = committed.filter((id) => !inBackup.has(id) && !exported.includes(id))
    expect(lost).toEqual([])
    // Rows were committed while the dump ran and after it: the export is what holds them.
    expect(committed.filter((id) => !inBackup.has(id)).length).toBeGreaterThan(10)
    // The row changed after the backup is exported in its new version; the filler is not exported.
    expect(exported).toContain(1)
    expect(counts['public.filler']).toBeUndefined()
    // Little overlap: only what was committed between the recorded snapshot and pg_dump's own.
    const both = exported.filter((id) => inBackup.has(id) && id !== 1)
    expect(both.length).toBeLessThan(exported.length / 2)
  })
})
