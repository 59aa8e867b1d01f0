import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { ADMIN_PASSWORD, startCluster, type Cluster } from '../support/pg-cluster.ts'
import { seedSampleData, tableChecksums } from '../support/sample-data.ts'
import { LOG_LINE, readLog, runScript, tempDir } from '../support/scripts.ts'

// The main job on a real PostgreSQL: backup, then restore, compared table by table.
let cluster: Cluster
let work: string
let env: Record<string, string>

beforeAll(async () => {
  cluster = await startCluster()
  await cluster.query('CREATE DATABASE shop')
  await seedSampleData(cluster, 'shop', 2000)
})
afterAll(() => cluster?.stop())

beforeEach(() => {
  work = tempDir('ttg-it-')
  env = {
    DB_MODE: 'url',
    DATABASE_URL: cluster.adminUrl('shop'),
    BACKUP_DIR: path.join(work, 'backups'),
    LOG_FILE: path.join(work, 'log', 'deployment.log'),
    DEPLOY_DIR: work,
    APP_SERVICES: '',
    MIN_FREE_DISK_MB: '1',
    KEY_TABLES: 'users,businesses',
  }
})

function index(): { backups: Record<string, unknown>[] } {
  return JSON.parse(fs.readFileSync(path.join(env.BACKUP_DIR!, 'backup_index.json'), 'utf8'))
}

describe('backup then restore', () => {
  it('round-trips every table exactly and logs the contract lines', async () => {
    const before = await tableChecksums(cluster, 'shop')
    const backup = await runScript('backup', ['scheduled', '--json'], env)
    expect(backup.stderr).toContain('Backup complete: ')
    expect(backup.code).toBe(0)
    const record = JSON.parse(backup.stdout)
    expect(record).toMatchObject({ backup_type: 'scheduled', verified: true, compressed: true, database_name: 'shop' })
    expect(record.backup_id).toMatch(/^shop_\d{8}_\d{6}$/)
    expect(record.row_counts).toMatchObject({ 'public.users': 2000, 'public.businesses': 500, 'public."Audit Trail"': 37, 'public.empty_table': 0 })
    expect(fs.existsSync(record.file_path)).toBe(true)
    expect(index().backups).toHaveLength(1)

    // Change the live data so the restore has something to undo.
    await cluster.query(`DELETE FROM businesses WHERE id > 10; UPDATE users SET name = 'changed'; CREATE TABLE stray (x int)`, 'shop')
    const restore = await runScript('restore', [record.backup_id, '--yes'], env)
    expect(restore.stderr).toBe('')
    expect(restore.code).toBe(0)
    expect(restore.stdout).toContain('Verification successful: 2,000 users, 500 businesses')
    expect(await tableChecksums(cluster, 'shop')).toEqual(before)

    const databases = await cluster.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE 'shop%'`)
    expect(databases.map((d) => d.datname)).toEqual(['shop'])

    const lines = readLog(env.LOG_FILE!)
    for (const line of lines) expect(line).toMatch(LOG_LINE)
    const info = lines.filter((l) => / INFO: /.test(l)).map((l) => l.replace(/^\[[^\]]+\] INFO: /, ''))
    expect(info).toEqual(expect.arrayContaining([
      'Starting database backup (type: scheduled)',
      `Creating backup: ${record.backup_id}.sql.gz`,
      'Verifying backup integrity',
      'Verification successful',
      'Cleaning up old backups',
      'Deleted 0 expired backups',
      `Backup complete: ${record.file_path}`,
      'Starting database restore',
      `Backup file: ${record.file_path}`,
      'Creating fresh database',
      'Restoring from backup',
      'Restoration complete',
      'Verifying restored data',
      'Verification successful: 2,000 users, 500 businesses',
      'Dropping existing database',
      'Restore successful',
    ]))
    const all = lines.join('\n') + backup.stdout + backup.stderr + restore.stdout
    expect(all).not.toContain(ADMIN_PASSWORD)
  })

  it('backs up the database it replaced, as it was at the swap, as an indexed safety backup', async () => {
    const first = JSON.parse((await runScript('backup', ['--json'], env)).stdout)
    await cluster.query(`INSERT INTO users (name) VALUES ('written after the backup')`, 'shop')
    const replaced = await tableChecksums(cluster, 'shop')
    const restore = await runScript('restore', [first.file_path, '--yes'], env)
    expect(restore.code, restore.stderr).toBe(0)
    const safety = index().backups.find((b) => b.reason)!
    expect(safety).toMatchObject({ backup_type: 'manual', verified: true, database_name: 'shop' })
    expect(String(safety.reason)).toContain(path.basename(first.file_path))
    expect(path.basename(String(safety.file_path))).toMatch(/^shop_\d{8}_\d{6}/)
    expect(await cluster.query(`SELECT datname FROM pg_database WHERE datname LIKE '%restore%'`)).toEqual([])
    // Restoring the safety backup brings back the row written after the first backup.
    const back = await runScript('restore', [String(safety.backup_id), '--yes'], env)
    expect(back.code, back.stderr).toBe(0)
    expect(await tableChecksums(cluster, 'shop')).toEqual(replaced)
  })

  it('restores onto a server where the database does not exist yet (a rebuilt host)', async () => {
    const backup = JSON.parse((await runScript('backup', ['--json'], env)).stdout)
    const before = await tableChecksums(cluster, 'shop')
    const fresh = { ...env, DATABASE_URL: cluster.adminUrl('shop_rebuilt') }
    const restore = await runScript('restore', [backup.file_path, '--yes'], fresh)
    expect(restore.code, restore.stderr).toBe(0)
    expect(restore.stdout).toContain('Database shop_rebuilt did not exist before; no safety backup needed')
    expect(await tableChecksums(cluster, 'shop_rebuilt')).toEqual(before)
    const databases = await cluster.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE 'shop%' ORDER BY 1`)
    expect(databases.map((d) => d.datname)).toEqual(['shop', 'shop_rebuilt'])
    await cluster.query('DROP DATABASE shop_rebuilt')
  })

  it('serializes two concurrent backups and indexes both', async () => {
    const [a, b] = await Promise.all([runScript('backup', ['--json'], env), runScript('backup', ['scheduled', '--json'], env)])
    expect([a.code, b.code]).toEqual([0, 0])
    const ids = index().backups.map((r) => r.backup_id)
    expect(new Set(ids).size).toBe(2)
    for (const r of index().backups) expect(fs.existsSync(String(r.file_path))).toBe(true)
    expect(fs.readdirSync(env.BACKUP_DIR!).filter((f) => f.endsWith('.partial'))).toEqual([])
  })

  it('drills a restore into a scratch database without touching the live one', async () => {
    await runScript('backup', [], env)
    const before = await tableChecksums(cluster, 'shop')
    await cluster.query(`INSERT INTO users (name) VALUES ('written after the backup')`, 'shop')
    const after = await tableChecksums(cluster, 'shop')
    const drill = await runScript('restore', ['--drill'], env)
    expect(drill.code).toBe(0)
    expect(drill.stdout).toContain('Restore drill passed')
    expect(await tableChecksums(cluster, 'shop')).toEqual(after)
    expect(after).not.toEqual(before)
    expect(index().backups.at(-1)!.last_drill).toMatchObject({ outcome: 'passed' })
    const leftovers = await cluster.query(`SELECT datname FROM pg_database WHERE datname LIKE '%restore%'`)
    expect(leftovers).toEqual([])
  })

  it('publishes the backup and the drill for the textfile collector', async () => {
    const metrics = path.join(work, 'metrics')
    fs.mkdirSync(metrics)
    const started = Math.floor(Date.now() / 1000)
    expect((await runScript('backup', ['scheduled'], { ...env, METRICS_DIR: metrics })).code).toBe(0)
    expect((await runScript('restore', ['--drill'], { ...env, METRICS_DIR: metrics })).code).toBe(0)
    const backup = fs.readFileSync(path.join(metrics, 'toogoodtogo_backup_scheduled.prom'), 'utf8')
    const stamp = Number(/^toogoodtogo_backup_last_success_timestamp_seconds\{type="scheduled"\} (\d+)$/m.exec(backup)?.[1])
    expect(stamp).toBeGreaterThanOrEqual(started)
    expect(fs.readFileSync(path.join(metrics, 'toogoodtogo_drill.prom'), 'utf8')).toMatch(/^toogoodtogo_drill_last_success 1$/m)
  })

  it('re-verifies indexed backups with --verify', async () => {
    await runScript('backup', [], env)
    // The backup was verified when it was taken: mark it long ago, so only a new check can move it.
    const indexFile = path.join(env.BACKUP_DIR!, 'backup_index.json')
    const stale = JSON.parse(fs.readFileSync(indexFile, 'utf8')) as { backups: { verified_at: string | null }[] }
    for (const b of stale.backups) b.verified_at = '2000-01-01T00:00:00Z'
    fs.writeFileSync(indexFile, JSON.stringify(stale, null, 2))
    const started = Math.floor(Date.now() / 1000) * 1000
    const result = await runScript('backup', ['--verify', 'all'], env)
    expect(result.code).toBe(0)
    for (const b of index().backups) expect(Date.parse(String(b.verified_at))).toBeGreaterThanOrEqual(started)
  })
})
