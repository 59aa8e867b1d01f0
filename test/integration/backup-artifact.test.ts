import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startCluster, type Cluster } from '../support/pg-cluster.ts'
import { runScript, tempDir } from '../support/scripts.ts'

// A backup records the version running when it was taken (the data model's artifact_id), read
// from artifacts.json; none recorded, or an unreadable file, leaves it null and the backup whole.
let cluster: Cluster
let work: string

beforeAll(async () => {
  cluster = await startCluster()
  await cluster.query('CREATE DATABASE shop')
  await cluster.query('CREATE TABLE t (id int); INSERT INTO t VALUES (1)', 'shop')
  work = tempDir('ttg-it-artifact-')
})
afterAll(() => {
  cluster?.stop()
  fs.rmSync(work, { recursive: true, force: true })
})

const env = () => ({ DB_MODE: 'url', DATABASE_URL: cluster.adminUrl('shop'), BACKUP_DIR: path.join(work, 'backups'), LOG_FILE: path.join(work, 'log', 'deployment.log'), DEPLOY_DIR: work, APP_SERVICES: '', MIN_FREE_DISK_MB: '1' })

async function backupArtifact(): Promise<unknown> {
  const r = await runScript('backup', ['scheduled', '--json'], env())
  expect(r.code, r.stderr).toBe(0)
  return (JSON.parse(r.stdout) as { artifact_id: unknown }).artifact_id
}

describe('a backup names the running version', () => {
  it('null with no deployment recorded, the current artifact once there is one, null again for a corrupt artifacts.json', async () => {
    expect(await backupArtifact()).toBeNull()
    const artifact = { artifact_id: 'v1.2.0', git_commit_sha: 'a'.repeat(40), git_tag: 'v1.2.0', docker_image_uri: 'r/bot:v1.2.0', docker_image_digest: null, deployed: true, deployed_at: '2026-12-01T03:00:00Z', rollback_from: null, schema_revision: null }
    fs.writeFileSync(path.join(work, 'artifacts.json'), JSON.stringify({ current: artifact, previous: null }))
    expect(await backupArtifact()).toBe('v1.2.0')
    fs.writeFileSync(path.join(work, 'artifacts.json'), '{"current": ')
    expect(await backupArtifact()).toBeNull()
  })
})
