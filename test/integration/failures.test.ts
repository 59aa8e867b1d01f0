import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import zlib from 'node:zlib'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { fileStamp } from '../../lib/core/format.ts'
import { startCluster, type Cluster } from '../support/pg-cluster.ts'
import { seedSampleData, tableChecksums } from '../support/sample-data.ts'
import { readLog, runScript, tempDir, urlModeEnv } from '../support/scripts.ts'

// Bad input and bad days: each case ends with a clear message, the contract's exit code, and the
// live database, the index and the older backups exactly as they were.
let cluster: Cluster
let work: string
let env: Record<string, string>
let goodBackup: { backup_id: string; file_path: string }

beforeAll(async () => {
  cluster = await startCluster()
  await cluster.query('CREATE DATABASE shop')
  await seedSampleData(cluster, 'shop', 300)
})
afterAll(() => cluster?.stop())

beforeEach(async () => {
  work = tempDir('ttg-fail-')
  env = urlModeEnv(cluster.adminUrl('shop'), work)
  const made = await runScript('backup', ['--json'], env)
  expect(made.code).toBe(0)
  goodBackup = JSON.parse(made.stdout)
})

function snapshot(): Promise<unknown> {
  return Promise.all([
    tableChecksums(cluster, 'shop'),
    cluster.query(`SELECT datname FROM pg_database ORDER BY 1`),
    fs.readFileSync(path.join(env.BACKUP_DIR!, 'backup_index.json'), 'utf8'),
    fs.readdirSync(env.BACKUP_DIR!).sort(),
  ])
}

function rewriteDump(edit: (sql: string) => string): string {
  const sql = zlib.gunzipSync(fs.readFileSync(goodBackup.file_path)).toString('utf8')
  const file = path.join(work, 'edited.sql.gz')
  fs.writeFileSync(file, zlib.gzipSync(edit(sql)))
  return file
}

describe('restore refuses bad backups before changing anything', () => {
  it('a truncated dump (valid gzip, no completion trailer) exits 2', async () => {
    const file = rewriteDump((sql) => sql.slice(0, Math.floor(sql.length * 0.6)))
    const before = await snapshot()
    const result = await runScript('restore', [file, '--yes'], env)
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/incomplete.*trailer/)
    expect(await snapshot()).toEqual(before)
  })

  it('a corrupt gzip stream exits 2', async () => {
    const bytes = fs.readFileSync(goodBackup.file_path)
    for (let i = 100; i < bytes.length - 20; i += 97) bytes[i] = bytes[i]! ^ 0xff
    const file = path.join(work, 'corrupt.sql.gz')
    fs.writeFileSync(file, bytes)
    const before = await snapshot()
    const result = await runScript('restore', [file, '--yes'], env)
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/corrupted/)
    expect(await snapshot()).toEqual(before)
  })

  it('an indexed backup changed on disk fails its checksum: restore exits 2, --verify exits 2 and marks it', async () => {
    const original = fs.readFileSync(goodBackup.file_path)
    const before = await snapshot()
    fs.appendFileSync(goodBackup.file_path, zlib.gzipSync('SELECT 1;\n'))
    const grown = await runScript('restore', [goodBackup.backup_id, '--yes'], env)
    expect(grown.code).toBe(2)
    expect(grown.stderr).toMatch(/does not match its record: \d+ bytes on disk/)
    // Same size, still valid gzip (the header's timestamp changed): only the checksum can tell.
    const retouched = Buffer.from(original)
    retouched[4]! ^= 0xff
    fs.writeFileSync(goodBackup.file_path, retouched)
    const result = await runScript('restore', [goodBackup.backup_id, '--yes'], env)
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/checksum/)
    expect(await snapshot()).toEqual(before)
    const verify = await runScript('backup', ['--verify', goodBackup.backup_id], env)
    expect(verify.code).toBe(2)
    const index = JSON.parse(fs.readFileSync(path.join(env.BACKUP_DIR!, 'backup_index.json'), 'utf8'))
    expect(index.backups[0].verified).toBe(false)
  })

  it('a missing or foreign file, or a malformed or traversal id, exits 2', async () => {
    for (const arg of ['/etc/passwd', 'shop_20250101_000000/../../x', 'shop_20250101_000000;rm -rf /', '/nonexistent/x.sql.gz', 'shop_20990101_000000']) {
      const result = await runScript('restore', [arg, '--yes'], env)
      expect(result.code, arg).toBe(2)
      expect(result.stderr, arg).toMatch(/not found|neither a backup id|not in|corrupted/)
    }
  })

  it('a dump whose SQL fails halfway leaves the live database untouched and no scratch database', async () => {
    const file = rewriteDump((sql) => sql.replace('-- PostgreSQL database dump complete', 'INSERT INTO no_such_table VALUES (1);\n-- PostgreSQL database dump complete'))
    const live = await tableChecksums(cluster, 'shop')
    const result = await runScript('restore', [file, '--yes'], env)
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/no_such_table/)
    expect(result.stderr).toContain('The live database was not touched')
    // A file the index does not know is restored statement by statement, as gunzip | psql would.
    const restoreCommand = readLog(env.LOG_FILE!).find((line) => / DEBUG: .*\| psql .*--dbname shop_restore_/.test(line))
    expect(restoreCommand).toBeDefined()
    expect(restoreCommand).not.toContain('--single-transaction')
    expect(await tableChecksums(cluster, 'shop')).toEqual(live)
    expect(await cluster.query(`SELECT datname FROM pg_database WHERE datname LIKE '%restore%'`)).toEqual([])
  })

  it('the same failure in a recorded backup, restored in one transaction, leaves everything as it was', async () => {
    // in BACKUP_DIR, named after its id: a record naming any other file is refused (issue 21)
    const file = path.join(env.BACKUP_DIR!, 'shop_20200101_000000.sql.gz')
    fs.copyFileSync(rewriteDump((sql) => sql.replace('-- PostgreSQL database dump complete', 'INSERT INTO no_such_table VALUES (1);\n-- PostgreSQL database dump complete')), file)
    const indexFile = path.join(env.BACKUP_DIR!, 'backup_index.json')
    const index = JSON.parse(fs.readFileSync(indexFile, 'utf8'))
    const recorded = { ...index.backups[0], backup_id: 'shop_20200101_000000', file_path: file, file_size_bytes: fs.statSync(file).size }
    fs.writeFileSync(indexFile, JSON.stringify({ ...index, backups: [...index.backups, recorded] }))
    const live = await tableChecksums(cluster, 'shop')
    const result = await runScript('restore', [recorded.backup_id, '--yes'], env)
    expect(result.code).toBe(1)
    expect(readLog(env.LOG_FILE!).find((line) => / DEBUG: .*\| psql .*--dbname shop_restore_/.test(line))).toContain('--single-transaction')
    expect(result.stderr).toMatch(/no_such_table/)
    expect(result.stderr).toContain('The live database was not touched')
    expect(await tableChecksums(cluster, 'shop')).toEqual(live)
    expect(await cluster.query(`SELECT datname FROM pg_database WHERE datname LIKE '%restore%'`)).toEqual([])
  })

  it('with no terminal and no --yes it refuses, exit 1, nothing changed', async () => {
    const before = await snapshot()
    const result = await runScript('restore', [goodBackup.backup_id], env)
    expect(result.code).toBe(1)
    expect(result.stderr).toContain('--yes')
    expect(await snapshot()).toEqual(before)
  })

  it('an unreachable database exits 3 before anything changes', async () => {
    const before = await snapshot()
    const result = await runScript('restore', [goodBackup.backup_id, '--yes'], { ...env, DATABASE_URL: env.DATABASE_URL!.replace(`:${cluster.port}/`, ':1/') })
    expect(result.code).toBe(3)
    expect(result.stderr).toMatch(/connection failed/i)
    expect(await snapshot()).toEqual(before)
  })
})

describe('backup fails safely', () => {
  it('a corrupt index is never overwritten: exit 1 naming the file, and no dump is made', async () => {
    const file = path.join(env.BACKUP_DIR!, 'backup_index.json')
    fs.writeFileSync(file, '{"backups": [{"backup_id": 42}]}')
    const files = fs.readdirSync(env.BACKUP_DIR!).sort()
    const result = await runScript('backup', [], env)
    expect(result.code).toBe(1)
    expect(result.stderr).toContain(file)
    expect(result.stderr).toMatch(/invalid at backups\.0/)
    expect(fs.readFileSync(file, 'utf8')).toBe('{"backups": [{"backup_id": 42}]}')
    expect(fs.readdirSync(env.BACKUP_DIR!).sort()).toEqual(files)
  })

  it('too little free space exits 3 with the contract message', async () => {
    const result = await runScript('backup', [], { ...env, MIN_FREE_DISK_MB: String(100 * 1024 * 1024) })
    expect(result.code).toBe(3)
    expect(result.stderr).toMatch(/ERROR: Insufficient disk space: [\d.]+[MG]B available, [\d.]+GB required/)
    expect(result.stderr).toMatch(/ERROR: Backup failed/)
  })

  it('a disk that fills up during the dump: exit 3, no partial file, no index entry, older backup intact', async () => {
    if (process.getuid?.() !== 0) throw new Error('this test mounts a small tmpfs and needs root (CI runs as root)')
    await cluster.query('CREATE DATABASE bigdb')
    await cluster.query(`CREATE TABLE blob AS SELECT g AS id, (SELECT string_agg(md5(random()::text || s || g), '') FROM generate_series(1, 20) s) AS body FROM generate_series(1, 20000) g`, 'bigdb')
    const small = path.join(work, 'small')
    fs.mkdirSync(small)
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', small])
    try {
      const smallEnv = { ...env, BACKUP_DIR: small }
      const older = JSON.parse((await runScript('backup', ['--json'], smallEnv)).stdout)
      const olderHash = sha256(older.file_path)
      const index = fs.readFileSync(path.join(small, 'backup_index.json'), 'utf8')
      const result = await runScript('backup', [], { ...smallEnv, DATABASE_URL: cluster.adminUrl('bigdb') })
      expect(result.code).toBe(3)
      expect(result.stderr).toMatch(/Disk full/)
      expect(fs.readdirSync(small).filter((f) => !f.startsWith('.')).sort()).toEqual(['backup_index.json', path.basename(older.file_path)])
      expect(fs.readFileSync(path.join(small, 'backup_index.json'), 'utf8')).toBe(index)
      expect(sha256(older.file_path)).toBe(olderHash)
    } finally {
      execFileSync('umount', [small])
    }
  })

  it('a host pg_dump older than the server is refused with a clear message', async () => {
    const bin = path.join(work, 'bin')
    fs.mkdirSync(bin)
    fs.writeFileSync(path.join(bin, 'pg_dump'), '#!/bin/sh\necho "pg_dump (PostgreSQL) 12.9"\n', { mode: 0o755 })
    const result = await runScript('backup', [], { ...env, PATH: `${bin}:${process.env.PATH}` })
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/pg_dump on this host is version 12 but the server is version 1\d/)
  })

  it('an unwritable log file is reported once and the backup still succeeds', async () => {
    const result = await runScript('backup', [], { ...env, LOG_FILE: '/proc/ttg-no-such/deployment.log' })
    expect(result.code).toBe(0)
    expect(result.stderr.match(/cannot write log file/g)).toHaveLength(1)
  })

  it('retention deletes only backups beyond the count and past retention_until, and cleans leftovers', async () => {
    const indexFile = path.join(env.BACKUP_DIR!, 'backup_index.json')
    await runScript('backup', [], env)
    await runScript('backup', [], env)
    const index = JSON.parse(fs.readFileSync(indexFile, 'utf8'))
    // Age the two oldest; make the third's file vanish; leave a .partial behind.
    index.backups[0].created_at = index.backups[0].retention_until = '2020-01-01T00:00:00Z'
    index.backups[1].created_at = index.backups[1].retention_until = '2020-01-02T00:00:00Z'
    fs.rmSync(index.backups[2].file_path)
    // Records whose files are gone, under the ids the next backup would take: it must not reuse one.
    // Not an id the index holds (the backup just taken may share this second).
    const taken = new Set(index.backups.map((b: { backup_id: string }) => b.backup_id))
    const phantoms = [0, 1, 2, 3, 4, 5, 6].map((ahead) => {
      const id = `shop_${fileStamp(new Date(Date.now() + ahead * 1000))}`
      return { ...index.backups[2], backup_id: id, file_path: path.join(env.BACKUP_DIR!, `${id}.sql.gz`) }
    }).filter((p) => !taken.has(p.backup_id)).slice(0, 6)
    index.backups.push(...phantoms)
    fs.writeFileSync(indexFile, JSON.stringify(index))
    fs.writeFileSync(path.join(env.BACKUP_DIR!, 'shop_20200101_000000.sql.gz.partial'), 'x')
    const result = await runScript('backup', [], { ...env, BACKUP_RETENTION_COUNT: '1' })
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('Deleted 2 expired backups')
    expect(result.stderr.match(/file .* is missing/g)).toHaveLength(1 + phantoms.length)
    expect(result.stderr).toMatch(/leftover partial/)
    const after = JSON.parse(fs.readFileSync(indexFile, 'utf8'))
    expect(after.backups).toHaveLength(1)
    expect(phantoms.map((p) => p.backup_id)).not.toContain(after.backups[0].backup_id)
    expect(fs.readdirSync(env.BACKUP_DIR!).filter((f) => f.endsWith('.gz') || f.endsWith('.partial'))).toEqual([path.basename(after.backups[0].file_path)])
  })
})

describe('the command line', () => {
  it('--dry-run prints the plan and changes nothing', async () => {
    const before = await snapshot()
    const backup = await runScript('backup', ['--dry-run'], env)
    expect(backup.code).toBe(0)
    expect(backup.stdout).toMatch(/\[dry-run\] pg_dump .* \| pigz|\[dry-run\] pg_dump .* \| gzip/)
    const restore = await runScript('restore', [goodBackup.backup_id, '--dry-run', '--yes'], env)
    expect(restore.code).toBe(0)
    expect(restore.stdout).toMatch(/\[dry-run\] .*ALTER DATABASE/)
    // The safety backup: the replaced database, renamed aside, dumped at gzip level 1.
    expect(restore.stdout).toMatch(/\[dry-run\] pg_dump .*--dbname shop_pre_restore_\d{8}_\d{6} \| (pigz|gzip) -1/)
    expect(restore.stderr).toBe('')
    expect(await snapshot()).toEqual(before)
  })

  it('an unknown flag exits 1 with the usage line; --help exits 0', async () => {
    const bad = await runScript('backup', ['--dryrun'], env)
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/Unknown option '--dryrun'[\s\S]*Usage: backup/)
    const help = await runScript('restore', ['--help'], env)
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/Usage: restore[\s\S]*Exit codes:[\s\S]*Examples:/)
    const badType = await runScript('backup', ['weekly'], env)
    expect(badType.code).toBe(1)
    expect(badType.stderr).toContain('Unknown backup type "weekly"')
  })

  it('the .sh wrappers work through a symlink placed elsewhere', async () => {
    const { exec, ROOT } = await import('../support/scripts.ts')
    const link = path.join(work, 'backup.sh')
    fs.symlinkSync(path.join(ROOT, 'scripts/backup.sh'), link)
    const result = await exec([link, '--help'], {}, { inherit: true })
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/^backup: /)
  })

  it('a bad environment value stops with a message naming the variable', async () => {
    const result = await runScript('backup', [], { ...env, BACKUP_RETENTION_COUNT: 'seven' })
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/Invalid BACKUP_RETENTION_COUNT="seven"/)
    expect(readLog(env.LOG_FILE!).at(-1)).toMatch(/ERROR: Backup failed/)
  })
})

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex')
}
