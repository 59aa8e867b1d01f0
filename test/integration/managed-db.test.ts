import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startCluster, type Cluster } from '../support/pg-cluster.ts'
import { seedSampleData, tableChecksums } from '../support/sample-data.ts'
import { runScript, tempDir } from '../support/scripts.ts'

// A managed database gives no superuser: the toolkit must work as an ordinary role that owns its
// database and may create databases, and refuse clearly (changing nothing) when it may not.
let cluster: Cluster
const APP_PW = 'app-Pa55word'

beforeAll(async () => {
  cluster = await startCluster()
  await cluster.query(`CREATE ROLE app LOGIN CREATEDB PASSWORD '${APP_PW}'`)
  await cluster.query(`CREATE DATABASE appdb OWNER app`)
  await cluster.query(`CREATE ROLE plain LOGIN PASSWORD '${APP_PW}'`)
  await cluster.query(`CREATE DATABASE plaindb OWNER plain`)
  for (const [role, db] of [['app', 'appdb'], ['plain', 'plaindb']] as const) {
    const asRole = { ...cluster, query: (sql: string, database?: string) => cluster.query(sql, database, `${role}:${APP_PW}`) }
    await seedSampleData(asRole as Cluster, db, 200)
  }
})
afterAll(() => cluster?.stop())

function envFor(role: string, database: string): Record<string, string> {
  const work = tempDir('ttg-managed-')
  return {
    DB_MODE: 'url',
    DATABASE_URL: `postgresql://${role}:${encodeURIComponent(APP_PW)}@127.0.0.1:${cluster.port}/${database}?sslmode=disable&application_name=ttg-test`,
    BACKUP_DIR: path.join(work, 'backups'),
    LOG_FILE: path.join(work, 'deployment.log'),
    DEPLOY_DIR: work,
    APP_SERVICES: '',
    MIN_FREE_DISK_MB: '1',
  }
}

describe('as a role without superuser rights', () => {
  it('backs up and restores when the role owns its database and has CREATEDB', async () => {
    const env = envFor('app', 'appdb')
    const before = await tableChecksums(cluster, 'appdb')
    const backup = await runScript('backup', ['--json'], env)
    expect(backup.code).toBe(0)
    const { backup_id } = JSON.parse(backup.stdout)
    await cluster.query(`TRUNCATE businesses`, 'appdb')
    const restore = await runScript('restore', [backup_id, '--yes'], env)
    expect(restore.stderr).toBe('')
    expect(restore.code).toBe(0)
    expect(await tableChecksums(cluster, 'appdb')).toEqual(before)
    const [owner] = await cluster.query<{ owner: string }>(`SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = 'appdb'`)
    expect(owner!.owner).toBe('app')
    expect(fs.readFileSync(env.LOG_FILE!, 'utf8')).not.toContain(APP_PW)
  })

  it('refuses to restore without CREATEDB, before anything changes, and says how to grant it', async () => {
    const env = envFor('plain', 'plaindb')
    const backup = await runScript('backup', ['--json'], env)
    expect(backup.code).toBe(0)
    const before = await tableChecksums(cluster, 'plaindb')
    const indexBefore = fs.readFileSync(path.join(env.BACKUP_DIR!, 'backup_index.json'), 'utf8')
    const restore = await runScript('restore', [JSON.parse(backup.stdout).backup_id, '--yes'], env)
    expect(restore.code).toBe(1)
    expect(restore.stderr).toMatch(/cannot create databases \(needs CREATEDB\).*ALTER ROLE "plain" CREATEDB/)
    expect(await tableChecksums(cluster, 'plaindb')).toEqual(before)
    expect(fs.readFileSync(path.join(env.BACKUP_DIR!, 'backup_index.json'), 'utf8')).toBe(indexBefore)
  })
})
