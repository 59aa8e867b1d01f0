import { execFileSync, spawnSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { inspect } from 'node:util'
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backupRecordSchema, type BackupRecord } from '../../lib/db/backup-index.ts'
import { listRemoteBackups, findRemoteBackup } from '../../lib/offsite/catalog.ts'
import { downloadBackup } from '../../lib/offsite/download.ts'
import { OffsiteError } from '../../lib/core/errors.ts'
import { applyRemoteRetention } from '../../lib/offsite/retention.ts'
import { offsiteSettings, type OffsiteSettings } from '../../lib/core/offsite-config.ts'
import { localRecordFrom } from '../../lib/offsite/sidecar.ts'
import { PART_SIZE, uploadBackup } from '../../lib/offsite/upload.ts'
import { sha256OfFile } from '../../lib/core/streams.ts'
import { freePort, startCluster, type Cluster } from '../support/pg-cluster.ts'
import { requireCommands } from '../support/require-commands.ts'
import { startS3Server, type S3TestServer } from '../support/s3-server.ts'
import { seedSampleData } from '../support/sample-data.ts'
import { tempDir, waitFor } from '../support/scripts.ts'

// Off-site copies against a real S3 protocol server (s3rver over HTTPS, signatures checked) and a
// real backup (pg_dump | gzip of a seeded PostgreSQL database), encrypted by the real `age`.
let server: S3TestServer
let cluster: Cluster
let work: string
let key: Identity
let dump: { file: string; record: BackupRecord }

interface Identity {
  file: string
  recipient: string
}

const DAY = 24 * 3600_000

beforeAll(async () => {
  requireCommands({ age: 'age', 'age-keygen': 'age' })
  ;[cluster, server] = await Promise.all([startCluster(), startS3Server()])
  await cluster.query('CREATE DATABASE shop')
  await seedSampleData(cluster, 'shop', 2000)
  work = tempDir('ttg-offsite-')
  key = newIdentity('droplet')
  const file = path.join(work, 'shop_20261201_030000.sql.gz')
  execFileSync('bash', ['-o', 'pipefail', '-c', `pg_dump --dbname="$URL" | gzip -6 > "$OUT"`], { env: { ...process.env, URL: cluster.adminUrl('shop'), OUT: file } })
  dump = { file, record: await recordFor(file, 'shop_20261201_030000', new Date()) }
})

afterAll(async () => {
  await server?.stop()
  cluster?.stop()
  if (work) fs.rmSync(work, { recursive: true, force: true })
})

function newIdentity(name: string): Identity {
  const file = path.join(work, `${name}.agekey`)
  execFileSync('age-keygen', ['-o', file], { stdio: 'ignore' })
  fs.chmodSync(file, 0o600)
  return { file, recipient: execFileSync('age-keygen', ['-y', file], { encoding: 'utf8' }).trim() }
}

async function recordFor(file: string, backupId: string, createdAt: Date): Promise<BackupRecord> {
  const at = createdAt.toISOString().slice(0, 19) + 'Z'
  const bytes = fs.statSync(file).size
  return backupRecordSchema.parse({
    backup_id: backupId, created_at: at, backup_type: 'scheduled', file_path: file, file_size_mb: Math.round(bytes / 1048576),
    file_size_bytes: bytes, database_name: 'shop', pg_dump_version: '15', compressed: true, sha256: await sha256OfFile(file),
    row_counts: { 'public.users': 2000, 'public.businesses': 500, 'public."Audit Trail"': 37, 'public.empty_table': 0 },
    verified: true, verified_at: at, retention_until: new Date(createdAt.getTime() + 7 * DAY).toISOString().slice(0, 19) + 'Z', artifact_id: null,
  })
}

/** the same dump recorded as another backup, made `daysAgo` days ago */
function copyOf(daysAgo: number, serial = 0): BackupRecord {
  const created = new Date(Date.now() - daysAgo * DAY - serial * 60_000)
  const stamp = created.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '_')
  return { ...dump.record, backup_id: `shop_${stamp}`, created_at: created.toISOString().slice(0, 19) + 'Z' }
}

function on(vars: Record<string, string> = {}): OffsiteSettings {
  const settings = offsiteSettings(server.env({ BACKUP_AGE_RECIPIENT: key.recipient, BACKUP_AGE_IDENTITY_FILE: key.file, ...vars }))
  if (!settings) throw new Error('off-site settings are off')
  return settings
}

async function failureOf(promise: Promise<unknown>): Promise<OffsiteError> {
  const error = await promise.then(() => null, (e: unknown) => e)
  if (!(error instanceof OffsiteError)) throw new Error(`expected an OffsiteError, got ${inspect(error)}`)
  return error
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')

describe('off-site copies', () => {
  it('round trip: the bucket holds only ciphertext, and a download into an empty directory is byte-identical', async () => {
    const settings = on()
    const copy = await uploadBackup(settings, dump.file, dump.record, { client: server.client(settings) })
    expect(copy).toMatchObject({ key: 'toogoodtogo/shop_20261201_030000.sql.gz.age', uploaded_at: expect.stringMatching(/Z$/) })

    const stored = fs.readFileSync(server.objectFile(copy.key))
    expect(stored.length).toBe(copy.size)
    expect(sha256(stored)).toBe(copy.sha256)
    expect(stored.subarray(0, 21).toString()).toBe('age-encryption.org/v1')
    expect(spawnSync('gzip', ['-t'], { input: stored }).status).not.toBe(0)
    const plain = execFileSync('gzip', ['-dc', dump.file])
    expect(plain.includes('COPY public.users')).toBe(true)
    expect(stored.includes('COPY public.users')).toBe(false)
    // No aws-chunked framing (it would be stored inside the object), and each body is signed with its sha256.
    const puts = (await server.requestLog()).filter((l) => l.startsWith('PUT '))
    for (const line of puts) expect(line).toMatch(/ [0-9a-f]{64} -$/)

    const newDroplet = fs.mkdtempSync(path.join(work, 'new-droplet-'))
    const dest = path.join(newDroplet, 'shop_20261201_030000.sql.gz')
    const got = await downloadBackup(settings, copy.key, dest, { client: server.client(settings) })
    expect(got.sidecar).toMatchObject({ backup_id: 'shop_20261201_030000', ciphertext: { sha256: copy.sha256, size: copy.size } })
    expect(fs.readFileSync(dest).equals(fs.readFileSync(dump.file))).toBe(true)
    expect(fs.readdirSync(newDroplet)).toEqual(['shop_20261201_030000.sql.gz'])
    expect(fs.statSync(dest).mode & 0o777).toBe(0o600)

    // The same backup again (an index that lost its `offsite` field): recognised, not sent twice.
    expect(await uploadBackup(settings, dump.file, dump.record, { client: server.client(settings) })).toEqual(copy)
    expect((await server.requestLog()).filter((l) => l.startsWith('PUT '))).toHaveLength(puts.length)
    // And a download never replaces a file already there unless told to.
    const refused = await failureOf(downloadBackup(settings, copy.key, dest, { client: server.client(settings) }))
    expect(refused.message).toContain('already exists')
    expect(fs.readdirSync(newDroplet)).toEqual(['shop_20261201_030000.sql.gz'])
  })

  it('lists and verifies backups from the bucket alone, across listing pages', async () => {
    const settings = on({ OFFSITE_S3_PREFIX: 'catalog/' })
    const records = [copyOf(3), copyOf(2), copyOf(1), copyOf(0)]
    for (const record of records) await uploadBackup(settings, dump.file, record, { client: server.client(settings) })

    // A new droplet: a new client, nothing local, two keys per listing page.
    const before = (await server.requestLog()).length
    const catalog = await listRemoteBackups(settings, { client: server.client(settings), pageSize: 2 })
    const lists = (await server.requestLog()).slice(before).filter((l) => l.includes('list-type=2'))
    expect(lists.length).toBeGreaterThanOrEqual(4)
    expect(catalog.backups.map((b) => b.backupId)).toEqual(records.map((r) => r.backup_id))
    expect(catalog.unconfirmed).toEqual([])
    expect(catalog.invalid).toEqual([])
    expect(catalog.backups[0]?.sidecar).toMatchObject({
      backup_type: 'scheduled',
      database_name: 'shop',
      row_counts: dump.record.row_counts,
      plaintext: { size: dump.record.file_size_bytes, sha256: dump.record.sha256 },
      encryption: { scheme: 'age', recipient: key.recipient },
    })

    const latest = await findRemoteBackup(settings, 'latest', { client: server.client(settings) })
    expect(latest.backupId).toBe(records[3]?.backup_id)
    expect((await findRemoteBackup(settings, records[1]?.backup_id ?? '', { client: server.client(settings) })).key).toBe(`catalog/${records[1]?.backup_id}.sql.gz.age`)
    const missing = await failureOf(findRemoteBackup(settings, 'shop_20200101_000000', { client: server.client(settings) }))
    expect(missing).toMatchObject({ problem: 'not_found', kind: 'not_found' })
    expect(missing.message).toContain(records[3]?.backup_id)
    // What the new droplet writes into its empty index, from the sidecar alone.
    expect(localRecordFrom(latest.sidecar, '/new/backups/x.sql.gz')).toEqual({ ...records[3], file_path: '/new/backups/x.sql.gz' })
  })

  it('a wrong or missing identity is a typed error naming the key that was expected, and writes nothing', async () => {
    const settings = on({ OFFSITE_S3_PREFIX: 'identity/' })
    const client = server.client(settings)
    const copy = await uploadBackup(settings, dump.file, dump.record, { client })
    const other = newIdentity('someone-else')
    const destDir = fs.mkdtempSync(path.join(work, 'dest-'))
    const dest = path.join(destDir, 'restored.sql.gz')

    const wrong = await failureOf(downloadBackup(on({ OFFSITE_S3_PREFIX: 'identity/', BACKUP_AGE_IDENTITY_FILE: other.file }), copy.key, dest, { client }))
    expect(fs.readdirSync(destDir)).toEqual([])
    expect(wrong).toMatchObject({ problem: 'identity', kind: 'verify_failed', variable: 'BACKUP_AGE_IDENTITY_FILE' })
    expect(wrong.message).toContain(`not ${key.recipient}`)
    expect(wrong.message).toContain(other.recipient)

    const absent = await failureOf(downloadBackup(on({ OFFSITE_S3_PREFIX: 'identity/', BACKUP_AGE_IDENTITY_FILE: path.join(work, 'lost.agekey') }), copy.key, dest, { client }))
    expect(fs.readdirSync(destDir)).toEqual([])
    expect(absent).toMatchObject({ problem: 'identity', kind: 'verify_failed' })
    expect(absent.message).toMatch(/does not exist: .* was encrypted for age1/)
    expect(absent.message).toContain(key.recipient)

    const unset = await failureOf(downloadBackup(on({ OFFSITE_S3_PREFIX: 'identity/', BACKUP_AGE_IDENTITY_FILE: '' }), copy.key, dest, { client }))
    expect(fs.readdirSync(destDir)).toEqual([])
    expect(unset.message).toMatch(/^BACKUP_AGE_IDENTITY_FILE is not set: .*encrypted for age1/)

    const loose = path.join(work, 'loose.agekey')
    fs.copyFileSync(key.file, loose)
    fs.chmodSync(loose, 0o644)
    const exposed = await failureOf(downloadBackup(on({ OFFSITE_S3_PREFIX: 'identity/', BACKUP_AGE_IDENTITY_FILE: loose }), copy.key, dest, { client }))
    expect(fs.readdirSync(destDir)).toEqual([])
    expect(exposed.message).toContain('is mode 644')

    // A sidecar altered to name the other key gets past the identity check; its MAC (under the key
    // derived from the other identity) then refuses it, before a byte is downloaded.
    const sidecarKey = `${copy.key}.json`
    const text = await (await client.send(new GetObjectCommand({ Bucket: server.bucket, Key: sidecarKey }))).Body?.transformToString()
    const forged = JSON.parse(text ?? '{}') as { encryption: { recipient: string } }
    forged.encryption.recipient = other.recipient
    await client.send(new PutObjectCommand({ Bucket: server.bucket, Key: sidecarKey, Body: JSON.stringify(forged) }))
    const refused = await failureOf(downloadBackup(on({ OFFSITE_S3_PREFIX: 'identity/', BACKUP_AGE_IDENTITY_FILE: other.file }), copy.key, dest, { client }))
    expect(refused).toMatchObject({ problem: 'verify', kind: 'verify_failed' })
    expect(refused.message).toContain("is not authentic: its sidecar's MAC does not match")

    expect(fs.readdirSync(destDir)).toEqual([])
  })

  it('an object altered in the bucket is a verify error, and nothing is written', async () => {
    const settings = on({ OFFSITE_S3_PREFIX: 'altered/' })
    const client = server.client(settings)
    const destDir = fs.mkdtempSync(path.join(work, 'dest-'))
    const dest = path.join(destDir, 'restored.sql.gz')

    // One byte flipped on the server's disk: age stops at the chunk that no longer authenticates.
    const flipped = await uploadBackup(settings, dump.file, copyOf(0, 1), { client })
    const file = server.objectFile(flipped.key)
    const bytes = fs.readFileSync(file)
    const middle = Math.floor(bytes.length / 2)
    bytes[middle] = (bytes[middle] ?? 0) ^ 0xff
    fs.writeFileSync(file, bytes)
    const damaged = await failureOf(downloadBackup(settings, flipped.key, dest, { client }))
    expect(fs.readdirSync(destDir)).toEqual([])
    expect(damaged).toMatchObject({ problem: 'verify', kind: 'verify_failed' })
    expect(damaged.message).toMatch(/altered or damaged in the bucket/)

    // Cut short on the server's disk: the size alone gives it away, before any of it is read.
    const truncated = await uploadBackup(settings, dump.file, copyOf(0, 4), { client })
    fs.truncateSync(server.objectFile(truncated.key), Math.floor(truncated.size / 2))
    const short = await failureOf(downloadBackup(settings, truncated.key, dest, { client }))
    expect(fs.readdirSync(destDir)).toEqual([])
    expect(short).toMatchObject({ problem: 'verify', kind: 'verify_failed' })
    expect(short.message).toContain(`the object has ${Math.floor(truncated.size / 2)} bytes, its sidecar says ${truncated.size}`)

    // Replaced by another well-formed encryption for the same key, of the same size: age decrypts
    // it without complaint; only the recorded checksum tells.
    const replaced = await uploadBackup(settings, dump.file, copyOf(0, 2), { client })
    const impostor = path.join(work, 'impostor.bin')
    fs.writeFileSync(impostor, randomBytes(dump.record.file_size_bytes))
    execFileSync('age', ['--encrypt', '--recipient', key.recipient, '--output', server.objectFile(replaced.key), impostor])
    expect(fs.statSync(server.objectFile(replaced.key)).size).toBe(replaced.size)
    const swapped = await failureOf(downloadBackup(settings, replaced.key, dest, { client }))
    expect(fs.readdirSync(destDir)).toEqual([])
    expect(swapped).toMatchObject({ problem: 'verify', kind: 'verify_failed' })
    expect(swapped.message).toContain('its sha256 is not the one recorded')

    // A sidecar that records another plaintext: its MAC no longer matches, and nothing is downloaded.
    const relabelled = await uploadBackup(settings, dump.file, copyOf(0, 3), { client })
    const sidecarKey = `${relabelled.key}.json`
    const sidecar = JSON.parse((await (await client.send(new GetObjectCommand({ Bucket: server.bucket, Key: sidecarKey }))).Body?.transformToString()) ?? '{}') as { plaintext: { sha256: string } }
    sidecar.plaintext.sha256 = 'f'.repeat(64)
    await client.send(new PutObjectCommand({ Bucket: server.bucket, Key: sidecarKey, Body: JSON.stringify(sidecar) }))
    const mislabelled = await failureOf(downloadBackup(settings, relabelled.key, dest, { client }))
    expect(fs.readdirSync(destDir)).toEqual([])
    expect(mislabelled).toMatchObject({ problem: 'verify', kind: 'verify_failed' })
    expect(mislabelled.message).toContain("is not authentic: its sidecar's MAC does not match")

    expect(fs.readdirSync(destDir)).toEqual([])
  })

  it('wrong credentials, bucket or endpoint name the variable, and the secret never appears', async () => {
    const wrongSecret = `Wr0ng-Secret-${randomBytes(6).toString('hex')}`
    const settings = on({ OFFSITE_S3_PREFIX: 'creds/', OFFSITE_S3_SECRET_ACCESS_KEY: wrongSecret })
    const refused = await failureOf(uploadBackup(settings, dump.file, dump.record, { client: server.client(settings) }))
    expect(refused).toMatchObject({ problem: 'credentials', variable: 'OFFSITE_S3_SECRET_ACCESS_KEY' })
    expect(refused.message).toContain('OFFSITE_S3_SECRET_ACCESS_KEY')
    expect(refused.message).toContain('SignatureDoesNotMatch')
    for (const text of [refused.message, refused.stack ?? '', inspect(refused, { depth: 10 })]) {
      expect(text).not.toContain(wrongSecret)
      expect(text).not.toContain(server.secretAccessKey)
    }
    expect(fs.existsSync(path.join(server.root, server.bucket, 'creds'))).toBe(false)

    const unknownKey = on({ OFFSITE_S3_PREFIX: 'creds/', OFFSITE_S3_ACCESS_KEY_ID: 'NOSUCHKEYID' })
    expect(await failureOf(uploadBackup(unknownKey, dump.file, dump.record, { client: server.client(unknownKey) }))).toMatchObject({ problem: 'credentials', variable: 'OFFSITE_S3_ACCESS_KEY_ID' })

    const noBucket = on({ OFFSITE_S3_BUCKET: 'no-such-bucket' })
    const missing = await failureOf(uploadBackup(noBucket, dump.file, dump.record, { client: server.client(noBucket) }))
    expect(missing).toMatchObject({ problem: 'no_bucket', variable: 'OFFSITE_S3_BUCKET' })

    const nobody = on({ OFFSITE_S3_ENDPOINT: `https://127.0.0.1:${await freePort()}` })
    const unreachable = await failureOf(uploadBackup(nobody, dump.file, dump.record, { client: server.client(nobody) }))
    expect(unreachable).toMatchObject({ problem: 'network', variable: 'OFFSITE_S3_ENDPOINT' })
  })

  it('a local file that no longer matches its index record is not copied, and its upload is aborted', async () => {
    const settings = on({ OFFSITE_S3_PREFIX: 'changed/' })
    const file = path.join(work, 'shop_20261129_030000.sql.gz')
    execFileSync('bash', ['-o', 'pipefail', '-c', `head -c 20M /dev/urandom | gzip -1 > "${file}"`])
    const record = await recordFor(file, 'shop_20261129_030000', new Date())
    fs.appendFileSync(file, 'written after the backup was verified')
    const changed = await failureOf(uploadBackup(settings, file, record, { client: server.client(settings) }))
    expect(changed).toMatchObject({ problem: 'local' })
    expect(changed.message).toContain('is no longer the file the index describes')
    // Parts went out before the end of the file showed the mismatch; the upload was aborted.
    const log = await server.requestLog()
    expect(log.filter((l) => l.startsWith('PUT /ttg-offsite/changed/') && l.includes('x-id=UploadPart')).length).toBeGreaterThanOrEqual(1)
    expect(log.some((l) => l.startsWith('DELETE /ttg-offsite/changed/shop_20261129_030000.sql.gz.age?uploadId='))).toBe(true)
    expect(fs.existsSync(server.objectFile('changed/shop_20261129_030000.sql.gz.age'))).toBe(false)
    expect(fs.existsSync(server.objectFile('changed/shop_20261129_030000.sql.gz.age.json'))).toBe(false)
    expect(fs.existsSync(server.uploadsDir()) ? fs.readdirSync(server.uploadsDir()) : []).toEqual([])
    fs.rmSync(file)
  })

  it('retention deletes beyond both limits, keeps the newest verified, and a failing listing or delete deletes nothing more', async () => {
    const settings = on({ OFFSITE_S3_PREFIX: 'retention/', OFFSITE_RETENTION_COUNT: '1', OFFSITE_RETENTION_DAYS: '30' })
    const client = server.client(settings)
    const ages = [40, 35, 31, 20, 2, 1]
    const records = ages.map((days) => copyOf(days))
    for (const record of records) await uploadBackup(settings, dump.file, record, { client })
    // Newer than all of them, but never verified (no sidecar): it is not "the newest copy".
    const unverified = `retention/${copyOf(0).backup_id}.sql.gz.age`
    await client.send(new PutObjectCommand({ Bucket: server.bucket, Key: unverified, Body: 'half an upload' }))
    const present = () => records.filter((r) => fs.existsSync(server.objectFile(`retention/${r.backup_id}.sql.gz.age`)) && fs.existsSync(server.objectFile(`retention/${r.backup_id}.sql.gz.age.json`))).length

    // The fourth listing page fails: the three copies on the first pages (40, 35, 31 days old)
    // must not be judged, let alone deleted, on a partial listing.
    await server.injectFault({ method: 'GET', match: 'list-type=2', skip: 3, count: 10 })
    const listing = await failureOf(applyRemoteRetention(settings, { client, pageSize: 2 }))
    await server.clearFaults()
    expect(listing.message).toMatch(/^Off-site retention: the listing failed, so nothing was deleted: .*InternalError/)
    expect(present()).toBe(6)

    // The first delete fails: it stops there, and says so.
    await server.injectFault({ method: 'DELETE', match: 'retention/', count: 10, status: 403, code: 'AccessDenied' })
    const deleting = await failureOf(applyRemoteRetention(settings, { client }))
    await server.clearFaults()
    expect(deleting.message).toMatch(/^Off-site retention stopped after deleting 0 of 3 planned \(none\); the rest are kept: .*AccessDenied/)
    expect(present()).toBe(6)

    const result = await applyRemoteRetention(settings, { client })
    expect(result.deleted.map((b) => b.backupId)).toEqual(records.slice(0, 3).map((r) => r.backup_id))
    expect(result.kept.map((b) => b.backupId)).toEqual(records.slice(3).map((r) => r.backup_id))
    expect(present()).toBe(3)
    for (const r of records.slice(0, 3)) expect(fs.existsSync(server.objectFile(`retention/${r.backup_id}.sql.gz.age.json`))).toBe(false)
    // The unverified object is young: left for its run to finish. Once stale, it goes.
    expect(fs.existsSync(server.objectFile(unverified))).toBe(true)
    const later = await applyRemoteRetention(settings, { client, staleAfterMs: 0 })
    expect(later.removedLeftovers.map((o) => o.key)).toEqual([unverified])
    expect(later.deleted).toEqual([])
    expect(fs.existsSync(server.objectFile(unverified))).toBe(false)
    expect(present()).toBe(3)
  })

  it('a server killed mid-upload is a typed error; nothing is listed as good, the incomplete upload is aborted, and the next run uploads it', { timeout: 600_000 }, async () => {
    const settings = on({ OFFSITE_S3_PREFIX: 'big/' })
    const big = path.join(work, 'shop_20261130_030000.sql.gz')
    const compressor = spawnSync('sh', ['-c', 'command -v pigz'], { stdio: 'ignore' }).status === 0 ? 'pigz -1 -p 2' : 'gzip -1'
    execFileSync('bash', ['-o', 'pipefail', '-c', `head -c 230M /dev/urandom | ${compressor} > "${big}"`])
    const record = await recordFor(big, 'shop_20261130_030000', new Date(Date.now() - DAY))
    const key = 'big/shop_20261130_030000.sql.gz.age'

    const started = Date.now()
    const upload = uploadBackup(settings, big, record, { client: server.client(settings) })
    const outcome = upload.then(() => null, (e: unknown) => e)
    await waitFor(() => server.partsUploaded() >= 3, 120_000)
    await server.kill()
    const error = await outcome
    expect(error).toBeInstanceOf(OffsiteError)
    expect(error).toMatchObject({ problem: 'interrupted' })
    expect((error as Error).message).toMatch(/stopped answering in the middle of the transfer .*; its parts could not be aborted and are left for retention to abort; no copy is recorded as good$/)
    expect(Date.now() - started).toBeLessThan(120_000)

    await server.start()
    const client = server.client(settings)
    const catalog = await listRemoteBackups(settings, { client })
    expect(catalog.backups).toEqual([])
    expect(catalog.unconfirmed).toEqual([])
    expect(fs.existsSync(server.objectFile(key))).toBe(false)
    expect(fs.existsSync(server.objectFile(`${key}.json`))).toBe(false)
    expect(server.partsUploaded()).toBeGreaterThanOrEqual(3)

    const cleaned = await applyRemoteRetention(settings, { client, staleAfterMs: 0 })
    expect(cleaned.abortedUploads.map((u) => u.key)).toEqual([key])
    expect(cleaned.warnings).toEqual([])
    expect(fs.readdirSync(server.uploadsDir())).toEqual([])

    // The next run (backup.sh --offsite-sync) sends it whole, in parts, and it comes back intact.
    const copy = await uploadBackup(settings, big, record, { client })
    expect(copy.size).toBeGreaterThan(230 * 1024 * 1024)
    // Every part was signed with the sha256 of exactly the bytes the server stored for it.
    const stored = fs.readFileSync(server.objectFile(key))
    const parts = (await server.requestLog()).filter((l) => l.includes('x-id=UploadPart'))
    const uploadId = /uploadId=(\w+)/.exec(parts.at(-1) ?? '')?.[1]
    const signed = new Map(parts.filter((l) => l.includes(`uploadId=${uploadId}`)).map((l) => [Number(/partNumber=(\d+)/.exec(l)?.[1]), l.split(' ')[2]]))
    expect(signed.size).toBe(Math.ceil(stored.length / PART_SIZE))
    for (const [number, hash] of signed) expect(sha256(stored.subarray((number - 1) * PART_SIZE, number * PART_SIZE))).toBe(hash)
    expect((await listRemoteBackups(settings, { client })).backups.map((b) => b.key)).toEqual([key])
    const dest = path.join(fs.mkdtempSync(path.join(work, 'big-')), 'back.sql.gz')
    await downloadBackup(settings, key, dest, { client })
    expect(await sha256OfFile(dest)).toBe(record.sha256)
    fs.rmSync(path.dirname(dest), { recursive: true, force: true })
    fs.rmSync(big, { force: true })
  })
})
