import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backupRecordSchema } from '../../lib/db/backup-index.ts'
import { listRemoteBackups } from '../../lib/offsite/catalog.ts'
import { uploadBackup } from '../../lib/offsite/upload.ts'
import { offsiteSettings, type OffsiteSettings } from '../../lib/core/offsite-config.ts'
import { sha256OfFile } from '../../lib/core/streams.ts'
import { startCluster, type Cluster } from '../support/pg-cluster.ts'
import { requireCommands } from '../support/require-commands.ts'
import { startS3Server, type S3TestServer } from '../support/s3-server.ts'
import { seedSampleData, tableChecksums } from '../support/sample-data.ts'
import { exec, ROOT, runScript, tempDir, waitFor, type ScriptResult } from '../support/scripts.ts'

// Off-site copies through the scripts, as an operator runs them: backup.ts and restore.ts as real
// processes against a real PostgreSQL and a real S3 protocol server over TLS (s3rver, signatures
// checked), encrypted by the real `age`. Each test uses its own prefix in the one bucket.
let cluster: Cluster
let server: S3TestServer
let work: string
let key: { file: string; recipient: string }

interface Record_ {
  backup_id: string
  file_path: string
  sha256: string
  offsite: { key: string; size: number; sha256: string; uploaded_at: string } | null
  offsite_error: { problem: string; message: string } | null
  last_drill: { outcome: string } | null
}

beforeAll(async () => {
  requireCommands({ age: 'age', 'age-keygen': 'age' })
  ;[cluster, server] = await Promise.all([startCluster(), startS3Server()])
  await cluster.query('CREATE DATABASE shop')
  await seedSampleData(cluster, 'shop', 2000)
  work = tempDir('ttg-offsite-scripts-')
  key = identity('droplet')
})

afterAll(async () => {
  await server?.stop()
  cluster?.stop()
  if (work) fs.rmSync(work, { recursive: true, force: true })
})

function identity(name: string): { file: string; recipient: string } {
  const file = path.join(work, `${name}.agekey`)
  execFileSync('age-keygen', ['-o', file], { stdio: 'ignore' })
  fs.chmodSync(file, 0o600)
  return { file, recipient: execFileSync('age-keygen', ['-y', file], { encoding: 'utf8' }).trim() }
}

/** A droplet: its own BACKUP_DIR and log, this bucket under `prefix`, this cluster's `database`. */
function droplet(prefix: string, extra: Record<string, string> = {}, c: Cluster = cluster, database = 'shop'): Record<string, string> {
  const dir = fs.mkdtempSync(path.join(work, 'droplet-'))
  return {
    DB_MODE: 'url',
    DATABASE_URL: c.adminUrl(database),
    BACKUP_DIR: path.join(dir, 'backups'),
    LOG_FILE: path.join(dir, 'log', 'deployment.log'),
    DEPLOY_DIR: dir,
    APP_SERVICES: '',
    MIN_FREE_DISK_MB: '1',
    KEY_TABLES: 'users,businesses',
    NODE_EXTRA_CA_CERTS: server.caFile,
    ...server.env({ OFFSITE_S3_PREFIX: prefix, BACKUP_AGE_RECIPIENT: key.recipient, BACKUP_AGE_IDENTITY_FILE: key.file }),
    ...extra,
  }
}

function settingsOf(env: Record<string, string>): OffsiteSettings {
  const settings = offsiteSettings(env)
  if (!settings) throw new Error('off-site is off')
  return settings
}

function index(env: Record<string, string>): Record_[] {
  return (JSON.parse(fs.readFileSync(path.join(env.BACKUP_DIR ?? '', 'backup_index.json'), 'utf8')) as { backups: Record_[] }).backups
}

async function backup(env: Record<string, string>, args: string[] = ['manual']): Promise<{ result: ScriptResult; record: Record_ }> {
  const result = await runScript('backup', [...args, '--json'], env)
  return { result, record: JSON.parse(result.stdout || 'null') as Record_ }
}

function ok(result: ScriptResult): void {
  if (result.code !== 0) throw new Error(`exit ${result.code}: ${result.stderr}`)
}

/** What a failed restore must leave exactly as it was. */
async function state(env: Record<string, string>): Promise<unknown> {
  return [await tableChecksums(cluster, 'shop'), fs.readFileSync(path.join(env.BACKUP_DIR ?? '', 'backup_index.json'), 'utf8'), fs.readdirSync(env.BACKUP_DIR ?? '').sort()]
}

describe('off-site copies through backup.sh and restore.sh', () => {
  it('round trip: the backup goes to the bucket encrypted, and restore <id> fetches it when the local file is gone', async () => {
    const env = droplet('roundtrip/')
    const before = await tableChecksums(cluster, 'shop')
    const { result, record } = await backup(env, ['scheduled'])
    ok(result)
    expect(record.offsite).toMatchObject({ key: `roundtrip/${record.backup_id}.sql.gz.age` })
    expect(index(env)[0]?.offsite).toEqual(record.offsite)
    const stored = fs.readFileSync(server.objectFile(record.offsite?.key ?? ''))
    expect(stored.subarray(0, 21).toString()).toBe('age-encryption.org/v1')
    expect(spawnSync('gzip', ['-t'], { input: stored }).status).not.toBe(0)
    expect(stored.length).toBe(record.offsite?.size)

    fs.rmSync(record.file_path)
    await cluster.query(`DELETE FROM businesses WHERE id > 10; UPDATE users SET name = 'changed'`, 'shop')
    const restore = await runScript('restore', [record.backup_id, '--yes'], env)
    ok(restore)
    expect(restore.stderr).toContain(`Backup ${record.backup_id} is not on local disk`)
    expect(restore.stdout).toContain(`Off-site backup ${record.backup_id} downloaded, decrypted and verified`)
    expect(await tableChecksums(cluster, 'shop')).toEqual(before)
    expect(await sha256OfFile(record.file_path)).toBe(record.sha256)

    // A local copy that no longer matches its checksum is replaced by the verified off-site one.
    fs.writeFileSync(record.file_path, Buffer.concat([fs.readFileSync(record.file_path).subarray(0, 100), Buffer.alloc(1000)]))
    const again = await runScript('restore', [record.backup_id, '--yes'], env)
    ok(again)
    expect(again.stderr).toContain('does not match its recorded checksum; fetching its off-site copy')
    expect(await sha256OfFile(record.file_path)).toBe(record.sha256)
    expect(await tableChecksums(cluster, 'shop')).toEqual(before)

    // `latest` with the bucket out of reach: the newest local backup (not a safety backup) is used.
    await cluster.query(`UPDATE users SET name = 'changed again'`, 'shop')
    const offline = await runScript('restore', ['latest', '--yes'], { ...env, OFFSITE_S3_ENDPOINT: 'https://127.0.0.1:9' })
    ok(offline)
    expect(offline.stderr).toContain(`The off-site copies cannot be listed`)
    expect(offline.stderr).toContain(`using the newest local backup, ${record.backup_id}`)
    expect(await tableChecksums(cluster, 'shop')).toEqual(before)
  })

  it('disaster recovery: an empty BACKUP_DIR on a new database server, the same bucket and identity, restore latest', { timeout: 300_000 }, async () => {
    const old = droplet('dr/')
    ok((await backup(old, ['scheduled'])).result)
    await cluster.query(`INSERT INTO users (name) VALUES ('after the first backup')`, 'shop')
    const { result, record: newest } = await backup(old, ['scheduled'])
    ok(result)
    const expected = await tableChecksums(cluster, 'shop')

    const fresh = await startCluster()
    try {
      // What compose's first start leaves: an empty database of that name.
      await fresh.query('CREATE DATABASE shop')
      const env = droplet('dr/', {}, fresh)
      expect(fs.existsSync(env.BACKUP_DIR ?? '')).toBe(false)
      const restore = await runScript('restore', ['latest', '--yes'], env)
      ok(restore)
      expect(await tableChecksums(fresh, 'shop')).toEqual(expected)
      expect(index(env).map((b) => b.backup_id)).toContain(newest.backup_id)
      expect(index(env).find((b) => b.backup_id === newest.backup_id)?.offsite?.key).toBe(newest.offsite?.key)

      // The weekly drill on the new droplet: the newest off-site copy, downloaded and restored into
      // a scratch database; the live one untouched, nothing left behind.
      const drill = await runScript('restore', ['--drill'], env)
      ok(drill)
      expect(drill.stdout).toContain('Starting restore drill of the newest off-site copy')
      expect(drill.stdout).toContain(`Restore drill passed: ${newest.backup_id}`)
      expect(index(env).find((b) => b.backup_id === newest.backup_id)?.last_drill).toMatchObject({ outcome: 'passed' })
      expect(fs.readdirSync(env.BACKUP_DIR ?? '').filter((f) => f.startsWith('.drill-'))).toEqual([])
      expect(await tableChecksums(fresh, 'shop')).toEqual(expected)
      const databases = await fresh.query<{ datname: string }>(`SELECT datname FROM pg_database WHERE datname LIKE 'shop%'`)
      expect(databases.map((d) => d.datname)).toEqual(['shop'])
    } finally {
      fresh.stop()
    }
  })

  it('a wrong identity, or an object altered in the bucket, is exit 2 with nothing changed', async () => {
    const env = droplet('refused/')
    const { result, record } = await backup(env)
    ok(result)
    fs.rmSync(record.file_path)
    await cluster.query(`UPDATE users SET name = name || '!' WHERE id = 1`, 'shop')
    const before = await state(env)

    const other = identity('not-the-droplets')
    const wrong = await runScript('restore', [record.backup_id, '--yes'], { ...env, BACKUP_AGE_IDENTITY_FILE: other.file })
    expect(wrong.code).toBe(2)
    expect(wrong.stderr).toContain(`not ${key.recipient}`)
    expect(await state(env)).toEqual(before)

    const missing = await runScript('restore', [record.backup_id, '--yes'], { ...env, BACKUP_AGE_IDENTITY_FILE: path.join(work, 'lost.agekey') })
    expect(missing.code).toBe(2)
    expect(missing.stderr).toMatch(/BACKUP_AGE_IDENTITY_FILE=\S+ does not exist: .*was encrypted for age1/)
    expect(await state(env)).toEqual(before)

    const object = server.objectFile(record.offsite?.key ?? '')
    const bytes = fs.readFileSync(object)
    const middle = Math.floor(bytes.length / 2)
    bytes[middle] = (bytes[middle] ?? 0) ^ 0xff
    fs.writeFileSync(object, bytes)
    const altered = await runScript('restore', [record.backup_id, '--yes'], env)
    expect(altered.code).toBe(2)
    expect(altered.stderr).toMatch(/altered or damaged in the bucket/)
    expect(await state(env)).toEqual(before)
  })

  it('a wrong secret key: the backup is kept and indexed, exit 4 names OFFSITE_S3_SECRET_ACCESS_KEY, the secret is never logged; --list shows where each backup is', async () => {
    const env = droplet('creds/')
    const good = await backup(env)
    ok(good.result)
    const secret = 'Wr0ng-Secret-Value-For-The-Test'
    const bad = await backup({ ...env, OFFSITE_S3_SECRET_ACCESS_KEY: secret })
    expect(bad.result.code).toBe(4)
    expect(bad.result.stderr).toContain('OFFSITE_S3_SECRET_ACCESS_KEY')
    expect(bad.result.stderr).toMatch(/ERROR: Off-site copy of \S+ failed: .*OFFSITE_S3_SECRET_ACCESS_KEY/)
    expect(bad.result.stderr.trim().split('\n').at(-1)).toMatch(/ERROR: Backup verified locally, off-site copy failed$/)
    expect(bad.record.offsite).toBeNull()
    expect(bad.record.offsite_error).toMatchObject({ problem: 'credentials' })
    expect(await sha256OfFile(bad.record.file_path)).toBe(bad.record.sha256)
    expect(index(env).find((b) => b.backup_id === bad.record.backup_id)).toMatchObject({ offsite: null, offsite_error: { problem: 'credentials' } })
    const logText = fs.readFileSync(env.LOG_FILE ?? '', 'utf8')
    expect(logText).toContain('OFFSITE_S3_SECRET_ACCESS_KEY')
    expect(logText).not.toContain(secret)
    expect(logText).not.toContain(server.secretAccessKey)
    expect(bad.result.stderr + bad.result.stdout).not.toContain(secret)

    // Another droplet's backup in the same prefix: in the bucket only, as far as this one knows.
    // Ids have whole seconds: in the same second as the failed one it would name the same object.
    await sleep(1010 - (Date.now() % 1000))
    const elsewhere = droplet('creds/')
    const theirs = await backup(elsewhere)
    ok(theirs.result)

    const listed = await runScript('backup', ['--list', '--json'], env)
    ok(listed)
    const rows = JSON.parse(listed.stdout) as { backup_id: string; where: string; verified: boolean; backup_type: string }[]
    const where = Object.fromEntries(rows.map((r) => [r.backup_id, r.where]))
    expect(where).toEqual({ [good.record.backup_id]: 'both', [bad.record.backup_id]: 'local', [theirs.record.backup_id]: 'off-site' })
    const table = await runScript('backup', ['--list'], env)
    ok(table)
    expect(table.stdout.split('\n')[0]).toMatch(/^BACKUP ID\s+TYPE\s+SIZE\s+AGE\s+WHERE\s+VERIFIED\s+LAST DRILL$/)
    expect(table.stdout).toMatch(new RegExp(`${bad.record.backup_id}\\s+manual\\s+\\d+KB\\s+\\d+[smhd]( \\d+[smh])?\\s+local\\s+yes\\s+-`))

    // The catch-up: --offsite-sync copies what failed, and the index says so.
    const sync = await runScript('backup', ['--offsite-sync'], env)
    ok(sync)
    expect(sync.stdout).toContain('Off-site sync: 1 copied, 0 failed')
    expect(index(env).find((b) => b.backup_id === bad.record.backup_id)).toMatchObject({ offsite: { key: `creds/${bad.record.backup_id}.sql.gz.age` }, offsite_error: null })
  })

  it('off-site retention runs after each backup; a listing that fails deletes nothing and is exit 4', async () => {
    const env = droplet('retention/', { OFFSITE_RETENTION_COUNT: '1', OFFSITE_RETENTION_DAYS: '1' })
    const first = await backup(env)
    ok(first.result)
    // A copy 40 days old in the bucket (another droplet's, long ago): beyond both limits.
    const settings = settingsOf(env)
    const created = new Date(Date.now() - 40 * 86400_000)
    const stamp = created.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '_')
    const old = backupRecordSchema.parse({ ...index(env)[0], backup_id: `shop_${stamp}`, created_at: created.toISOString().slice(0, 19) + 'Z' })
    await uploadBackup(settings, first.record.file_path, old, { client: server.client(settings) })
    const oldKey = `retention/${old.backup_id}.sql.gz.age`
    expect(fs.existsSync(server.objectFile(oldKey))).toBe(true)

    await server.injectFault({ method: 'GET', match: 'list-type=2', count: 10 })
    const failing = await backup(env)
    await server.clearFaults()
    expect(failing.result.code).toBe(4)
    expect(failing.result.stderr).toMatch(/ERROR: Off-site retention: the listing failed, so nothing was deleted/)
    expect(failing.record.offsite).not.toBeNull()
    expect(fs.existsSync(server.objectFile(oldKey))).toBe(true)

    const cleaning = await backup(env)
    ok(cleaning.result)
    expect(cleaning.result.stderr).toMatch(/INFO: Deleted 1 expired off-site copy; 3 kept/)
    expect(fs.existsSync(server.objectFile(oldKey))).toBe(false)
    expect(fs.existsSync(server.objectFile(`${oldKey}.json`))).toBe(false)
    expect(fs.existsSync(server.objectFile(cleaning.record.offsite?.key ?? ''))).toBe(true)
  })

  it('--dry-run plans the encrypted copy and changes nothing; no secret in the plan', async () => {
    const env = droplet('dryrun/')
    fs.mkdirSync(env.BACKUP_DIR ?? '', { recursive: true })
    const plan = await runScript('backup', ['scheduled', '--dry-run'], env)
    ok(plan)
    expect(plan.stdout).toMatch(new RegExp(`\\[dry-run\\] age --encrypt --recipient ${key.recipient} \\S+\\.sql\\.gz \\| upload to ${server.bucket}/dryrun/\\S+\\.sql\\.gz\\.age, then \\S+\\.json`))
    expect(plan.stdout + plan.stderr).not.toContain(server.secretAccessKey)
    expect(fs.readdirSync(env.BACKUP_DIR ?? '')).toEqual([])
    expect(fs.existsSync(path.join(server.root, server.bucket, 'dryrun'))).toBe(false)
  })

  it('a deploy whose pre-deployment off-site copy fails still gets its backup: createBackup warns and returns the failure', async () => {
    const env = droplet('deploy/', { OFFSITE_S3_ENDPOINT: `https://127.0.0.1:9` })
    const child = await exec([path.join(ROOT, 'node_modules/.bin/tsx'), path.join(ROOT, 'test/support/create-backup-child.ts')], { ...env, NO_COLOR: '1', PATH: process.env.PATH ?? '' }, { inherit: false })
    ok(child)
    const record = JSON.parse(child.stdout) as Record_ & { backup_type: string; artifact_id: string }
    expect(record).toMatchObject({ backup_type: 'pre_deployment', artifact_id: 'v1.0.0', offsite: null, offsite_error: { problem: 'network' } })
    expect(record.offsite_error?.message).toContain('OFFSITE_S3_ENDPOINT')
    expect(await sha256OfFile(record.file_path)).toBe(record.sha256)
    expect(index(env)).toHaveLength(1)
    // a warning, not an error: the deploy goes on
    expect(child.stderr).toMatch(/WARN: Off-site copy of \S+ failed: .*the local backup is verified and indexed/)
    expect(child.stderr).not.toContain('ERROR')
  })

  it('the S3 server killed mid-upload: the local backup is intact and indexed, exit 4, and the next --offsite-sync uploads it', { timeout: 600_000 }, async () => {
    // About 90 MB compressed, so the upload is still going when the server dies.
    await cluster.query('CREATE DATABASE big')
    await cluster.query(`CREATE TABLE blobs (id int PRIMARY KEY, body text);
      INSERT INTO blobs SELECT g, (SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 64) i) FROM generate_series(1, 80000) g`, 'big')
    const env = droplet('killed/', { KEY_TABLES: 'blobs' }, cluster, 'big')
    const settings = settingsOf(env)
    const running = runScript('backup', ['scheduled', '--json'], env)
    await waitFor(() => server.partsUploaded() >= 2, 240_000)
    await server.kill()
    const result = await running
    await server.start()
    expect(result.code).toBe(4)
    expect(result.stderr).toMatch(/ERROR: Off-site copy of \S+ failed: .*stopped answering in the middle of the transfer/)
    const record = JSON.parse(result.stdout) as Record_
    expect(await sha256OfFile(record.file_path)).toBe(record.sha256)
    expect(index(env)).toEqual([expect.objectContaining({ backup_id: record.backup_id, offsite: null, offsite_error: expect.objectContaining({ problem: 'interrupted' }) })])
    const client = server.client(settings)
    expect((await listRemoteBackups(settings, { client })).backups).toEqual([])

    const sync = await runScript('backup', ['--offsite-sync'], env)
    ok(sync)
    expect(index(env)[0]?.offsite).toMatchObject({ key: `killed/${record.backup_id}.sql.gz.age` })
    expect((await listRemoteBackups(settings, { client })).backups.map((b) => b.backupId)).toEqual([record.backup_id])
    await cluster.query('DROP DATABASE big')
  })
})
