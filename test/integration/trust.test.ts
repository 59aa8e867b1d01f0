import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { offsiteSettings } from '../../lib/core/offsite-config.ts'
import { startCluster, type Cluster } from '../support/pg-cluster.ts'
import { startHookServer, type HookServer } from '../support/hook.ts'
import { requireCommands } from '../support/require-commands.ts'
import { startS3Server, type S3TestServer } from '../support/s3-server.ts'
import { seedSampleData, tableChecksums } from '../support/sample-data.ts'
import { runScript, tempDir, type ScriptResult, urlModeEnv } from '../support/scripts.ts'

// Issue 21, as an attacker would try it, in url mode against a real PostgreSQL, the real S3 test
// server and the real `age`: what the bucket, a dump, the index and the clock hand the toolkit is
// checked before it is used.
let cluster: Cluster
let server: S3TestServer
let hook: HookServer
let work: string
let key: { file: string; recipient: string }
/** the file a `\!` line in a forged dump would create: it must never exist */
let pwned: string

interface Rec {
  backup_id: string
  created_at: string
  file_path: string
  sha256: string
  file_size_bytes: number
  retention_until: string
  offsite: { key: string } | null
}

beforeAll(async () => {
  requireCommands({ age: 'age', 'age-keygen': 'age' })
  ;[cluster, server, hook] = await Promise.all([startCluster(), startS3Server(), startHookServer()])
  await cluster.query('CREATE DATABASE shop')
  await seedSampleData(cluster, 'shop', 500)
  work = tempDir('ttg-trust-')
  key = { file: path.join(work, 'droplet.agekey'), recipient: '' }
  execFileSync('age-keygen', ['-o', key.file], { stdio: 'ignore' })
  fs.chmodSync(key.file, 0o600)
  key.recipient = execFileSync('age-keygen', ['-y', key.file], { encoding: 'utf8' }).trim()
  pwned = path.join(work, `PWNED-${randomBytes(4).toString('hex')}`)
})

afterAll(async () => {
  await server?.stop()
  hook?.close()
  cluster?.stop()
  if (work) fs.rmSync(work, { recursive: true, force: true })
})

function droplet(prefix: string | null, c: Cluster = cluster): Record<string, string> {
  const dir = fs.mkdtempSync(path.join(work, 'droplet-'))
  return {
    ...urlModeEnv(c.adminUrl('shop'), dir),
    LOG_FILE: path.join(dir, 'log', 'deployment.log'),
    KEY_TABLES: 'users,businesses',
    NOTIFY_WEBHOOK_URL: hook.url,
    NODE_EXTRA_CA_CERTS: server.caFile,
    ...(prefix === null ? {} : server.env({ OFFSITE_S3_PREFIX: prefix, BACKUP_AGE_RECIPIENT: key.recipient, BACKUP_AGE_IDENTITY_FILE: key.file })),
  }
}

function ok(result: ScriptResult): ScriptResult {
  if (result.code !== 0) throw new Error(`exit ${result.code}: ${result.stderr}`)
  return result
}

async function backup(env: Record<string, string>): Promise<Rec> {
  return JSON.parse(ok(await runScript('backup', ['scheduled', '--json'], env)).stdout) as Rec
}

const indexFile = (env: Record<string, string>) => path.join(env.BACKUP_DIR ?? '', 'backup_index.json')
const readIndex = (env: Record<string, string>) => (JSON.parse(fs.readFileSync(indexFile(env), 'utf8')) as { backups: Rec[] }).backups
const writeIndex = (env: Record<string, string>, backups: Rec[]) => fs.writeFileSync(indexFile(env), JSON.stringify({ backups }, null, 2))
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex')
const stampOf = (d: Date) => d.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '_')

/** A gzip'd dump: the genuine one's text with `line` put in after its header. */
function evilDump(file: string, line: string): void {
  const text = execFileSync('pg_dump', ['--format=plain', '--no-owner', '--dbname', cluster.adminUrl('shop')], { encoding: 'utf8', maxBuffer: 1 << 28 })
  fs.writeFileSync(file, execFileSync('gzip', ['-c'], { input: text.replace('SET statement_timeout = 0;\n', `SET statement_timeout = 0;\n${line}\n`) }))
}

describe('trust nothing the toolkit reads', () => {
  it('a forged newer off-site copy, made with only the public key: the drill and restore latest pass over it, restore <its id> is exit 2, and its \\! line never runs', { timeout: 300_000 }, async () => {
    const env = droplet('forged/')
    const genuine = await backup(env)
    const settings = offsiteSettings(env)
    if (!settings) throw new Error('off-site is off')
    const client = server.client(settings)

    // The attacker holds the bucket keys and the public recipient: a dump whose first statement is
    // a shell command, encrypted with age, and a sidecar that describes those bytes exactly.
    const forgedId = `shop_${stampOf(new Date(Date.parse(genuine.created_at) + 60_000))}`
    const plainFile = path.join(work, 'forged.sql.gz')
    evilDump(plainFile, `\\! touch ${pwned}`)
    const cipherFile = path.join(work, 'forged.sql.gz.age')
    execFileSync('age', ['--encrypt', '--recipient', key.recipient, '--output', cipherFile, plainFile])
    const genuineSidecar = JSON.parse((await (await client.send(new GetObjectCommand({ Bucket: server.bucket, Key: `${genuine.offsite?.key}.json` }))).Body?.transformToString()) ?? '{}') as Record<string, unknown> & { record: Record<string, unknown>; authentication?: unknown }
    expect(genuineSidecar.authentication).toMatchObject({ scheme: expect.stringContaining('hmac-sha256') })
    const plain = fs.readFileSync(plainFile)
    const cipher = fs.readFileSync(cipherFile)
    const forgedKey = `forged/${forgedId}.sql.gz.age`
    const createdAt = new Date(Date.parse(genuine.created_at) + 60_000).toISOString().slice(0, 19) + 'Z'
    const forged = {
      ...genuineSidecar,
      key: forgedKey,
      backup_id: forgedId,
      created_at: createdAt,
      file_name: `${forgedId}.sql.gz`,
      plaintext: { size: plain.length, sha256: sha256(plain) },
      ciphertext: { size: cipher.length, sha256: sha256(cipher) },
      record: { ...genuineSidecar.record, backup_id: forgedId, created_at: createdAt, sha256: sha256(plain), file_size_bytes: plain.length },
    }
    delete forged.authentication
    await client.send(new PutObjectCommand({ Bucket: server.bucket, Key: forgedKey, Body: cipher }))
    await client.send(new PutObjectCommand({ Bucket: server.bucket, Key: `${forgedKey}.json`, Body: JSON.stringify(forged) }))
    // A second forgery replays the genuine MAC fields onto its own content.
    const replayId = `shop_${stampOf(new Date(Date.parse(genuine.created_at) + 120_000))}`
    const replayKey = `forged/${replayId}.sql.gz.age`
    const replayAt = new Date(Date.parse(genuine.created_at) + 120_000).toISOString().slice(0, 19) + 'Z'
    await client.send(new PutObjectCommand({ Bucket: server.bucket, Key: replayKey, Body: cipher }))
    const replay = { ...forged, key: replayKey, backup_id: replayId, created_at: replayAt, authentication: genuineSidecar.authentication, record: { ...forged.record, backup_id: replayId, created_at: replayAt } }
    await client.send(new PutObjectCommand({ Bucket: server.bucket, Key: `${replayKey}.json`, Body: JSON.stringify(replay) }))

    await cluster.query(`UPDATE users SET name = 'changed since' WHERE id = 1`, 'shop')
    const live = await tableChecksums(cluster, 'shop')
    const notified = hook.received.length
    const drill = ok(await runScript('restore', ['--drill'], env))
    expect(drill.stderr).toContain(`${replayId} (not authentic: its sidecar's MAC does not match`)
    expect(drill.stderr).toContain(`${forgedId} (not authentic: it carries no MAC`)
    expect(drill.stdout).toContain(`Restore drill passed: ${genuine.backup_id}`)
    expect(hook.received.slice(notified).join('\n')).toContain(`passed over as the newest: ${replayId}`)
    expect(fs.existsSync(pwned)).toBe(false)

    // A new droplet (empty BACKUP_DIR), the same bucket and identity: restore latest.
    const fresh = droplet('forged/')
    const latest = ok(await runScript('restore', ['latest', '--yes'], fresh))
    expect(latest.stderr).toContain(`${forgedId} (not authentic`)
    expect(latest.stdout).toContain(`Off-site backup ${genuine.backup_id} downloaded, decrypted and verified`)
    expect(fs.existsSync(pwned)).toBe(false)
    await cluster.query(`UPDATE users SET name = 'changed since' WHERE id = 1`, 'shop')
    expect(await tableChecksums(cluster, 'shop')).toEqual(live)

    // Named by its id: refused before a byte is downloaded, nothing changed.
    const files = fs.readdirSync(fresh.BACKUP_DIR ?? '').sort()
    for (const id of [forgedId, replayId]) {
      const named = await runScript('restore', [id, '--yes'], fresh)
      expect(named.code).toBe(2)
      expect(named.stderr).toMatch(new RegExp(`Off-site backup forged/${id}.sql.gz.age is not authentic: `))
    }
    expect(fs.readdirSync(fresh.BACKUP_DIR ?? '').sort()).toEqual(files)
    // --trust-unauthenticated accepts a copy without a MAC, never one whose MAC is wrong...
    expect((await runScript('restore', [replayId, '--yes', '--trust-unauthenticated'], fresh)).code).toBe(2)
    // ...and even then the dump's meta-command never runs: exit 2 naming its line, live unchanged.
    const trusted = await runScript('restore', [forgedId, '--yes', '--trust-unauthenticated'], fresh)
    expect(trusted.code).toBe(2)
    expect(trusted.stderr).toMatch(/holds a psql meta-command, code that would run on this host: line \d+ is the psql meta-command \\!/)
    expect(fs.existsSync(pwned)).toBe(false)
    expect(await tableChecksums(cluster, 'shop')).toEqual(live)
  })

  it('a local dump with a \\! line, at the start of a line or within one, is exit 2 naming the line; the live database is unchanged', async () => {
    const env = droplet(null)
    const live = await tableChecksums(cluster, 'shop')
    const databases = await cluster.query<{ datname: string }>('SELECT datname FROM pg_database ORDER BY 1')
    const whole = path.join(work, 'whole-line.sql.gz')
    evilDump(whole, `\\! touch ${pwned}`)
    const refused = await runScript('restore', [whole, '--yes'], env)
    expect(refused.code).toBe(2)
    expect(refused.stderr).toMatch(/line \d+ is the psql meta-command \\!/)
    const inline = path.join(work, 'in-a-line.sql.gz')
    evilDump(inline, `SELECT 1; \\! touch ${pwned}`)
    const refusedByPsql = await runScript('restore', [inline, '--yes'], env)
    expect(refusedByPsql.code).toBe(2)
    expect(refusedByPsql.stderr).toMatch(/psql refused a meta-command at line \d+/)
    expect(fs.existsSync(pwned)).toBe(false)
    expect(await tableChecksums(cluster, 'shop')).toEqual(live)
    expect(await cluster.query('SELECT datname FROM pg_database ORDER BY 1')).toEqual(databases)
  })

  it('an index whose file_path points outside BACKUP_DIR, or at a link: retention deletes nothing there and names it', async () => {
    const env = droplet(null)
    const first = await backup(env)
    const victims = fs.mkdtempSync(path.join(work, 'victims-'))
    const outside = path.join(victims, 'precious.txt')
    fs.writeFileSync(outside, 'not a backup')
    const linked = path.join(victims, 'linked.txt')
    fs.writeFileSync(linked, 'not a backup either')
    const old = (n: number) => new Date(Date.now() - (40 + n) * 86_400_000)
    const expired = (n: number, file: (id: string) => string): Rec => {
      const id = `shop_${stampOf(old(n))}`
      return { ...first, backup_id: id, created_at: old(n).toISOString().slice(0, 19) + 'Z', retention_until: old(n - 30).toISOString().slice(0, 19) + 'Z', file_path: file(id) }
    }
    const outsider = expired(1, () => outside)
    const viaLink = expired(2, (id) => path.join(env.BACKUP_DIR ?? '', `${id}.sql.gz`))
    fs.symlinkSync(linked, viaLink.file_path)
    writeIndex(env, [outsider, viaLink, ...readIndex(env)])

    const run = ok(await runScript('backup', ['scheduled'], { ...env, BACKUP_RETENTION_COUNT: '1' }))
    expect(run.stderr).toContain(`Backup ${outsider.backup_id} in the index is not trusted: its file_path ${outside} is not ${outsider.backup_id}.sql.gz`)
    expect(run.stderr).toContain(`Backup ${viaLink.backup_id} in the index is not trusted: its file ${viaLink.file_path} is a symbolic link`)
    expect(fs.readFileSync(outside, 'utf8')).toBe('not a backup')
    expect(fs.readFileSync(linked, 'utf8')).toBe('not a backup either')
    expect(fs.lstatSync(viaLink.file_path).isSymbolicLink()).toBe(true)

    // restore and verify refuse such a record by its id, and read nothing there
    const restore = await runScript('restore', [outsider.backup_id, '--yes'], env)
    expect(restore.code).toBe(2)
    expect(restore.stderr).toContain('is not trusted')
    const verify = await runScript('backup', ['--verify', viaLink.backup_id], env)
    expect(verify.code).not.toBe(0)
    expect(verify.stderr).toContain('is a symbolic link')
  })

  it('a backup dated in the future is flagged in --list and never latest; named by its id it still restores, with a warning', async () => {
    const env = droplet(null)
    const real = await backup(env)
    const future = new Date(Date.now() + 365 * 86_400_000)
    const futureId = `shop_${stampOf(future)}`
    const futureFile = path.join(env.BACKUP_DIR ?? '', `${futureId}.sql.gz`)
    fs.copyFileSync(real.file_path, futureFile)
    writeIndex(env, [...readIndex(env), { ...real, backup_id: futureId, created_at: future.toISOString().slice(0, 19) + 'Z', file_path: futureFile, offsite: null }])

    const list = ok(await runScript('backup', ['--list'], env))
    expect(list.stdout).toMatch(new RegExp(`${futureId} .*FUTURE-DATED`))
    const latest = ok(await runScript('restore', ['latest', '--yes'], env))
    expect(latest.stderr).toContain(`Backup ${futureId} is passed over as the newest: it is dated ${future.toISOString().slice(0, 19)}Z, after this droplet's clock`)
    expect(latest.stdout).toContain(`Backup file: ${real.file_path}`)
    const named = ok(await runScript('restore', [futureId, '--yes'], env))
    expect(named.stderr).toContain(`Backup ${futureId} is dated`)
    expect(named.stdout).toContain(`Backup file: ${futureFile}`)
  })
})
