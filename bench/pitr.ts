// npm run bench:pitr: point-in-time recovery on the Docker test bed (provisioned first, as the e2e
// tier does), with the scripts an operator runs.
//   RPO: a writer commits an order every 100 ms; at a random moment the postgres container and its
//        volume are destroyed; restore --to-time latest; the committed orders missing afterwards,
//        as seconds of writes. BENCH_PITR_TRIALS trials (5), median against archive_timeout.
//   Idle cost: WAL bytes archived per hour when the database is nearly idle (one write every 5 s),
//        for archive_timeout 60 and 15 s, measured over BENCH_PITR_IDLE_SECONDS (180) each.
//   RTO: a BENCH_PITR_GB (1) database restored from its dump (restore <id>) and to latest from the
//        archive (restore --to-time latest), in the same run on the same data.
// BENCH_PITR_TRIALS=0 or BENCH_PITR_GB=0 leaves that part out.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { ensurePostgresImage } from '../lib/db/pitr-image.ts'
import { formatBytes } from '../lib/core/format.ts'
import { createPitrStack, type PitrStack } from '../test/support/pitr-stack.ts'
import { ROOT } from '../test/support/scripts.ts'
import { bedEnv, exec } from '../test/support/stack.ts'
import { WRITER_TABLE, Writer } from '../test/support/writer.ts'

const TRIALS = Number(process.env.BENCH_PITR_TRIALS ?? 5)
const GB = Number(process.env.BENCH_PITR_GB ?? 1)
const IDLE_SECONDS = Number(process.env.BENCH_PITR_IDLE_SECONDS ?? 180)
const ARCHIVE_TIMEOUT = 60
const INTERVAL_MS = 100

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2
}

async function must(what: string, pending: Promise<{ code: number; stdout: string; stderr: string }>): Promise<string> {
  const r = await pending
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}):\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}

async function rpoTrial(p: PitrStack, trial: number): Promise<number> {
  const writer = new Writer(p.stack, INTERVAL_MS, (trial + 1) * 1_000_000)
  writer.start()
  // uniform over one archive_timeout, after a few seconds of steady load
  await new Promise((r) => setTimeout(r, 5000 + Math.random() * ARCHIVE_TIMEOUT * 1000))
  await p.destroyDatabase()
  const committed = await writer.stop()
  await must('restore --to-time latest', p.stack.script('restore', ['--to-time', 'latest', '--yes']))
  const found = new Set((await p.stack.psql(`SELECT id FROM ${WRITER_TABLE} WHERE id >= ${(trial + 1) * 1_000_000}`)).split('\n').filter(Boolean).map(Number))
  const lost = committed.filter((id) => !found.has(id)).length
  const seconds = (lost * INTERVAL_MS) / 1000
  console.log(`  trial ${trial + 1}: ${committed.length} committed, ${lost} lost = ${seconds.toFixed(1)} s of writes`)
  return seconds
}

async function archiveBytes(p: PitrStack): Promise<number> {
  const out = await must('du', exec(['du', '-sb', path.join(p.repoDir, 'archive')]))
  return Number(out.split('\t')[0])
}

/** archive_timeout is a server setting: the postgres container is recreated with it. */
async function setArchiveTimeout(p: PitrStack, timeout: number): Promise<void> {
  const envFile = path.join(p.stack.dir, '.env.production')
  fs.writeFileSync(envFile, fs.readFileSync(envFile, 'utf8').replace(/^PITR_ARCHIVE_TIMEOUT=.*$/m, `PITR_ARCHIVE_TIMEOUT=${timeout}`))
  await must('recreate postgres', p.stack.compose(['up', '-d', '--no-deps', 'postgres']))
  await must('health', p.stack.script('health-check', ['postgres', '--wait', '120']))
}

async function idleCost(p: PitrStack, timeout: number): Promise<number> {
  await setArchiveTimeout(p, timeout)
  const before = await archiveBytes(p)
  const writer = new Writer(p.stack, 5000, 50_000_000 + timeout * 10_000)
  writer.start()
  await new Promise((r) => setTimeout(r, IDLE_SECONDS * 1000))
  await writer.stop()
  const perHour = ((await archiveBytes(p)) - before) * (3600 / IDLE_SECONDS)
  console.log(`  archive_timeout=${timeout}s: ${formatBytes(perHour)} archived per idle hour (measured over ${IDLE_SECONDS} s)`)
  return perHour
}

async function rto(p: PitrStack): Promise<{ dump: number; pitr: number }> {
  const rows = Math.round(GB * 3_300_000)
  console.log(`  filling ${GB} GB (${rows.toLocaleString('en-US')} rows)`)
  await p.stack.psql(`CREATE TABLE bench_rows (id bigint PRIMARY KEY, body text NOT NULL); INSERT INTO bench_rows SELECT g, md5(g::text) || repeat(md5((g * 7)::text), 7) FROM generate_series(1, ${rows}) g`)
  console.log(`  database size: ${await p.stack.psql("SELECT pg_size_pretty(pg_database_size(current_database()))")}`)
  const dump = JSON.parse(await must('backup', p.stack.script('backup', ['manual', '--json']))) as { backup_id: string }
  await must('backup --physical full', p.stack.script('backup', ['--physical', 'full']))
  let started = performance.now()
  await must('restore <dump>', p.stack.script('restore', [dump.backup_id, '--yes']))
  const dumpSeconds = (performance.now() - started) / 1000
  started = performance.now()
  await must('restore --to-time latest', p.stack.script('restore', ['--to-time', 'latest', '--yes']))
  const pitrSeconds = (performance.now() - started) / 1000
  console.log(`  restore from the dump: ${dumpSeconds.toFixed(1)} s; restore --to-time latest: ${pitrSeconds.toFixed(1)} s (${(pitrSeconds / dumpSeconds).toFixed(2)}x)`)
  return { dump: dumpSeconds, pitr: pitrSeconds }
}

async function main(): Promise<void> {
  const provision = spawnSync('bash', [path.join(ROOT, 'test/e2e/bed/provision.sh')], { stdio: 'inherit' })
  if (provision.status !== 0) throw new Error('the Docker test bed could not be provisioned')
  await ensurePostgresImage(bedEnv().POSTGRES_IMAGE ?? 'postgres:15')
  const p = await createPitrStack({ offsite: false, archiveTimeout: ARCHIVE_TIMEOUT })
  try {
    await must('backup --physical full', p.stack.script('backup', ['--physical', 'full']))
    if (TRIALS > 0) {
      console.log(`RPO: ${TRIALS} sudden losses under ${1000 / INTERVAL_MS} writes/s, archive_timeout=${ARCHIVE_TIMEOUT}s`)
      const losses: number[] = []
      for (let i = 0; i < TRIALS; i++) losses.push(await rpoTrial(p, i))
      console.log(`  median ${median(losses).toFixed(1)} s of writes lost (goal <= ${ARCHIVE_TIMEOUT} s), max ${Math.max(...losses).toFixed(1)} s`)
    }
    console.log('Idle cost of archive_timeout (one write every 5 s):')
    const at60 = await idleCost(p, 60)
    const at15 = await idleCost(p, 15)
    console.log(`  15 s instead of 60 s: ${(at15 / Math.max(at60, 1)).toFixed(1)}x the archived bytes`)
    await setArchiveTimeout(p, ARCHIVE_TIMEOUT)
    if (GB > 0) {
      console.log(`RTO: ${GB} GB database`)
      await rto(p)
    }
  } finally {
    await p.down()
  }
}

await main()
