import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createPitrStack, type PitrStack } from '../support/pitr-stack.ts'
import { startHookServer, type HookServer } from '../support/hook.ts'
import { stopAfterFirstFailure } from '../support/sequence.ts'
import { exec, type Stack } from '../support/stack.ts'
import { WRITER_TABLE, Writer } from '../support/writer.ts'

// Point-in-time recovery on a real stack (test/support/pitr-stack.ts): the postgres service
// archives WAL through pgBackRest to repo1 (a directory under BACKUP_DIR) and repo2 (a bucket of
// the S3 test server, over TLS) while a writer commits orders. The scenarios build on each other,
// in order.
const INTERVAL_MS = 100
const ARCHIVE_TIMEOUT = 15
let pitr: PitrStack
let stack: Stack
let hook: HookServer

beforeAll(async () => {
  hook = await startHookServer()
  pitr = await createPitrStack({ offsite: true, archiveTimeout: ARCHIVE_TIMEOUT, env: { NOTIFY_WEBHOOK_URL: hook.url } })
  stack = pitr.stack
}, 600_000)

afterAll(async () => {
  await pitr?.down()
  hook?.close()
})

const restore = (args: string[]) => stack.script('restore', args)
const ids = async () => new Set((await stack.psql(`SELECT id FROM ${WRITER_TABLE}`)).split('\n').filter(Boolean).map(Number))

async function write(seconds: number, firstId: number): Promise<number[]> {
  const writer = new Writer(stack, INTERVAL_MS, firstId)
  writer.start()
  await new Promise((r) => setTimeout(r, seconds * 1000))
  return writer.stop()
}

describe('point-in-time recovery (pgBackRest, repo1 on the host, repo2 in the bucket over TLS)', () => {
  stopAfterFirstFailure()

  it('1. backup --physical takes a full base backup into repo1 and repo2; --list shows both and the archived WAL', async () => {
    await write(3, 1)
    const r = await stack.script('backup', ['--physical'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toMatch(/Physical backup complete in [\d.]+s: \S+F \(full, repo1, /)
    expect(r.stdout).toMatch(/Physical backup complete in [\d.]+s: \S+F \(full, repo2, /)
    const list = await stack.script('backup', ['--list'])
    expect(list.code, list.stdout + list.stderr).toBe(0)
    expect(list.stdout).toMatch(/Physical base backups \(pgBackRest, point-in-time recovery; stanza: ok\)/)
    expect(list.stdout).toMatch(/repo1: WAL [0-9A-F]{24} \.\. [0-9A-F]{24}; last run \S+ success/)
    expect(list.stdout).toMatch(/repo2: WAL [0-9A-F]{24} \.\. [0-9A-F]{24}; last run \S+ success/)
    // repo2 is encrypted: no WAL or backup file in the bucket is readable as PostgreSQL data
    const stored = await exec(['bash', '-c', `grep -rl --include='*._S3rver_object' "${WRITER_TABLE}" "${pitr.s3?.root}" | head -1`])
    expect(stored.stdout.trim()).toBe('')
    const health = await stack.script('health-check', ['postgres', '--json'])
    expect(health.code, health.stdout + health.stderr).toBe(0)
    expect(JSON.parse(health.stdout).services.postgres.wal_archive.waiting_segments).toBe(0)
  })

  it('2. restore --to-time T: exactly the rows committed up to T, none after, the dropped table back', async () => {
    const before = await write(4, 1000)
    await new Promise((r) => setTimeout(r, 1500))
    const target = await stack.psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    await new Promise((r) => setTimeout(r, 1500))
    const after = await write(3, 2000)
    expect(after.length).toBeGreaterThan(5)
    await stack.psql(`DROP TABLE ${WRITER_TABLE}`)
    const r = await restore(['--to-time', target, '--yes'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toMatch(/Recovery complete in \d+s/)
    expect(r.stdout).toMatch(new RegExp(`Verified: public\\.${WRITER_TABLE}: [\\d,]+ rows`))
    expect(r.stdout).toContain('Restore successful')
    const found = await ids()
    for (const id of before) expect(found.has(id), `order ${id}, committed before T`).toBe(true)
    for (const id of after) expect(found.has(id), `order ${id}, committed after T`).toBe(false)
    expect([...found].filter((id) => id >= 2000)).toEqual([])
    expect((await stack.script('health-check', [])).code).toBe(0)
  })

  it('3. sudden loss (container and volume destroyed while writing): restore --to-time latest from repo1 loses at most about archive_timeout of writes', async () => {
    const writer = new Writer(stack, INTERVAL_MS, 10_000)
    writer.start()
    await new Promise((r) => setTimeout(r, 8000))
    await pitr.destroyDatabase()
    const committed = await writer.stop()
    const r = await restore(['--to-time', 'latest', '--yes'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toMatch(/from repo1/)
    const found = await ids()
    const lost = committed.filter((id) => !found.has(id))
    const lostSeconds = (lost.length * INTERVAL_MS) / 1000
    console.log(`sudden loss, repo1: ${committed.length} committed, ${lost.length} lost = ${lostSeconds}s of writes`)
    expect(lostSeconds).toBeLessThanOrEqual(ARCHIVE_TIMEOUT + 15)
    // what survived is a prefix: nothing after a lost row
    if (lost.length) expect(Math.max(...committed.filter((id) => found.has(id)))).toBeLessThan(Math.min(...lost))
    expect((await stack.script('health-check', [])).code).toBe(0)
  })

  it('4. the disaster case: volume and repo1 gone; restore --to-time latest from the bucket (repo2) alone', async () => {
    const writer = new Writer(stack, INTERVAL_MS, 20_000)
    writer.start()
    await new Promise((r) => setTimeout(r, 5000))
    await pitr.destroyDatabase()
    const committed = await writer.stop()
    expect((await exec(['bash', '-c', `find "${pitr.repoDir}" -mindepth 1 -delete`])).code).toBe(0)
    const r = await restore(['--to-time', 'latest', '--yes'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout).toMatch(/from repo2/)
    const found = await ids()
    const lost = committed.filter((id) => !found.has(id))
    console.log(`disaster, repo2 only: ${committed.length} committed, ${lost.length} lost = ${(lost.length * INTERVAL_MS) / 1000}s of writes`)
    expect((lost.length * INTERVAL_MS) / 1000).toBeLessThanOrEqual(ARCHIVE_TIMEOUT + 15)
    // repo1 is a stanza again (archiving to it works); the next base backup makes it useful
    const backup = await stack.script('backup', ['--physical', 'full'])
    expect(backup.code, backup.stdout + backup.stderr).toBe(0)
    const health = await stack.script('health-check', ['postgres'])
    expect(health.code, health.stdout + health.stderr).toBe(0)
  })

  it('5. archive destination unwritable: postgres degraded with the reason, told once; writable again: archiving catches up, nothing lost', async () => {
    hook.received.length = 0
    expect((await exec(['chmod', '-R', 'a-w', path.join(pitr.repoDir, 'archive')])).code).toBe(0)
    try {
      await write(2, 30_000)
      await stack.psql('SELECT pg_switch_wal()')
      await new Promise((r) => setTimeout(r, 3000))
      const first = await stack.script('health-check', ['postgres'])
      expect(first.code, first.stdout + first.stderr).toBe(1)
      expect(first.stdout + first.stderr).toMatch(/postgres: degraded \(response: \d+ms; WAL archiving is (failing|behind).*last failure: [0-9A-F]{24} at /)
      const second = await stack.script('health-check', ['postgres'])
      expect(second.code).toBe(1)
      expect(hook.received.filter((n) => n.includes('WAL archiving'))).toHaveLength(1)
    } finally {
      await exec(['chmod', '-R', 'u+w', path.join(pitr.repoDir, 'archive')])
    }
    const committed = await write(2, 31_000)
    await stack.psql('SELECT pg_switch_wal()')
    let healthy = false
    for (let i = 0; i < 90 && !healthy; i++) {
      healthy = (await stack.script('health-check', ['postgres'])).code === 0
      if (!healthy) await new Promise((r) => setTimeout(r, 2000))
    }
    expect(healthy).toBe(true)
    expect(hook.received.filter((n) => n.includes('has caught up'))).toHaveLength(1)
    // nothing lost: the archive replays to every row the live server holds
    const live = Number(await stack.psql(`SELECT count(*) FROM ${WRITER_TABLE}`))
    const drill = await restore(['--drill', '--to-time', 'latest'])
    expect(drill.code, drill.stdout + drill.stderr).toBe(0)
    expect(drill.stdout).toMatch(new RegExp(`Point-in-time drill passed in \\d+s: public\\.${WRITER_TABLE}: ${live.toLocaleString('en-US')} rows`))
    expect(committed.length).toBeGreaterThan(0)
  })

  it('6. a restore that fails mid-way (a target before the first base backup): the previous data back, the bot healthy, exit 1 saying why', async () => {
    const before = await ids()
    const postgresBefore = await stack.psql('SELECT system_identifier FROM pg_control_system()')
    const r = await restore(['--to-time', '2020-01-01 00:00:00+00', '--yes'])
    expect(r.code, r.stdout + r.stderr).toBe(1)
    expect(r.stderr).toMatch(/ERROR: Point-in-time restore to 2020-01-01T00:00:00Z failed: .*The previous data directory is back as it was and bot restarted/)
    expect(await ids()).toEqual(before)
    expect(await stack.psql('SELECT system_identifier FROM pg_control_system()')).toBe(postgresBefore)
    expect((await stack.script('health-check', [])).code).toBe(0)
    const leftovers = await stack.compose(['run', '--rm', '--no-deps', '-T', '--user', 'postgres', 'postgres', 'bash', '-c', 'ls -A /var/lib/postgresql/data | grep -c "^.pitr-" || true'])
    expect(leftovers.stdout.trim()).toBe('0')
  })

  it('7. restore --drill --to-time latest leaves the live server alone and its scratch volume removed', async () => {
    const container = (await stack.compose(['ps', '-q', 'postgres'])).stdout.trim()
    const r = await restore(['--drill', '--to-time', 'latest'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect((await stack.compose(['ps', '-q', 'postgres'])).stdout.trim()).toBe(container)
    const volumes = await exec(['docker', 'volume', 'ls', '-q', '--filter', 'label=toogoodtogo.purpose=pitr-drill'])
    expect(volumes.stdout.trim()).toBe('')
  })

  it('8. a restarted server: health-check arms archive_timeout (a checkpoint), so a sudden loss costs at most about that much', async () => {
    expect((await stack.compose(['restart', 'postgres'])).code).toBe(0)
    const armed = await stack.script('health-check', ['postgres', '--wait', '60'])
    expect(armed.code, armed.stdout + armed.stderr).toBe(0)
    expect(armed.stdout).toContain('CHECKPOINT after the server start')
    // two archive_timeouts and more of steady writes, then the disk goes
    const writer = new Writer(stack, INTERVAL_MS, 40_000)
    writer.start()
    await new Promise((r) => setTimeout(r, (2 * ARCHIVE_TIMEOUT + 8) * 1000))
    await pitr.destroyDatabase()
    const committed = await writer.stop()
    const r = await restore(['--to-time', 'latest', '--yes'])
    expect(r.code, r.stdout + r.stderr).toBe(0)
    const found = await ids()
    const lostSeconds = (committed.filter((id) => !found.has(id)).length * INTERVAL_MS) / 1000
    console.log(`after a restart: ${committed.length} committed, ${lostSeconds}s of writes lost (archive_timeout ${ARCHIVE_TIMEOUT}s)`)
    expect(lostSeconds).toBeLessThanOrEqual(ARCHIVE_TIMEOUT + 5)
  })

  it('9. with PITR off, --physical and --to-time say so and change nothing', async () => {
    const off = { PITR_ENABLED: 'false' }
    const b = await stack.script('backup', ['--physical'], off)
    expect(b.code).toBe(1)
    expect(b.stderr).toMatch(/point-in-time recovery is off \(PITR_ENABLED=false/)
    const r = await stack.script('restore', ['--to-time', 'latest', '--yes'], off)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/point-in-time recovery is off/)
  })
})
