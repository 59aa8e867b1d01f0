// `npm run bench`: how fast and how lean scripts/backup.ts and scripts/restore.ts are, next to the
// shell pipelines they replace (`pg_dump | gzip -6 > file` and `gunzip -c file | psql`), measured in
// one run on one database. It is not a test: it prints what it measured and whether the goals of the
// issue are met, computed from the measurements.
//
// The database is built to be honest about gzip: random text, timestamps and jsonb that compress
// about 2:1 like real data, not pgbench's filler that compresses 35:1 and makes compression free.
// Everything runs on a throwaway cluster on 127.0.0.1 in a temporary directory, removed at the end.
//
//   BENCH_SIZE_MB        database size to build (default 1024)
//   BENCH_KEY_TABLES     KEY_TABLES for the tool's restore (default empty: the two largest tables)
//   BENCH_TOOL_ATTEMPTS  runs of a tool script before it counts as failed (default 3); failed
//                        attempts are listed in the report, never folded into the figures
//   BENCH_RESTORE_ROUNDS restores of each kind, alternating baseline and tool (default 5): a
//                        restore is short and the same pipeline varies by 30% from run to run on a
//                        shared machine, so the medians are compared and every run is printed
//   BENCH_OFFSITE        0 leaves out the last part: the tool's backup copied off-site (s3rver over
//                        HTTPS on 127.0.0.1, age), the local file deleted, restored from the bucket
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import pg from 'pg'
import { ADMIN_PASSWORD, startCluster, type Cluster } from '../test/support/pg-cluster.ts'
import { ROOT, tempDir } from '../test/support/scripts.ts'
import { startS3Server } from '../test/support/s3-server.ts'
import { killCurrent, measure, type Measurement, type TimedLine } from './process-meter.ts'

// The goals from the issue. Compression level 6 on both sides, so the ratio compares like with like.
const GOALS = { backupRatio: 0.6, restoreRatio: 1.0, peakRssMb: 150 }
const GZIP_LEVEL = 6
const DB = 'bench'
const MB = 1024 * 1024

interface Settings {
  sizeMb: number
  keyTables: string
  cores: number
  restoreRounds: number
}

interface Bench {
  settings: Settings
  cluster: Cluster
  work: string
  postmasterPid: number
  /** for the shell baselines: the password in the environment, as the tool does it */
  pgEnv: NodeJS.ProcessEnv
  /** the way test/integration runs the scripts: url mode, no application services */
  toolEnv: NodeJS.ProcessEnv
}

interface TableInfo {
  name: string
  rows: number
  bytes: number
}

interface DataSet {
  seconds: number
  sizeBytes: number
  tables: TableInfo[]
}

interface Results {
  data: DataSet
  dumpBytes: number
  baselineBackup: Measurement & { fileBytes: number }
  /** null: every attempt failed (see failedAttempts) */
  toolBackup: (Measurement & { fileBytes: number }) | null
  pigzBackup: Measurement & { fileBytes: number }
  bareDump: Measurement
  /** one per round, baseline and tool alternating */
  baselineRestores: Measurement[]
  /** the successful ones; a round whose every attempt failed has none */
  toolRestores: Measurement[]
}

async function main(): Promise<void> {
  const settings = readSettings()
  const started = performance.now()
  const work = tempDir('ttg-bench-')
  let cluster: Cluster | null = null
  // Cleanup runs on success, on an exception and on Ctrl-C: the cluster stopped, the files removed.
  const cleanUp = () => {
    killCurrent()
    cluster?.stop()
    cluster = null
    fs.rmSync(work, { recursive: true, force: true })
  }
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\nInterrupted by ${signal}; cleaning up\n`)
      cleanUp()
      process.exit(signal === 'SIGINT' ? 130 : 143)
    })
  }
  try {
    cluster = await startCluster()
    const bench = prepare(settings, cluster, work)
    printSetup(bench)

    const data = await buildDatabase(bench)
    printDatabase(data)
    warmUpTsx(bench)

    const baselineBackup = await measureBaselineBackup(bench)
    const toolBackup = await measureToolBackup(bench)
    const pigzBackup = await measurePigzReference(bench)
    const bareDump = await measureBareDump(bench)
    const dumpBytes = plainDumpBytes(bench, baselineBackup.file)

    // Restore the tool's own backup; should it have failed, the baseline file (restore.ts takes a path).
    const { baselineRestores, toolRestores } = await measureRestores(bench, baselineBackup.file, toolBackup?.backupId ?? baselineBackup.file, data)

    printReport({ data, dumpBytes, baselineBackup, toolBackup, pigzBackup, bareDump, baselineRestores, toolRestores })
    if (toolBackup && process.env.BENCH_OFFSITE !== '0') reportOffsiteRestore(await measureOffsiteRestore(bench, toolBackup.backupId, data), toolRestores)
    step(`Whole benchmark took ${seconds((performance.now() - started) / 1000)} (building the database included)`)
  } finally {
    cleanUp()
  }
}

function readSettings(): Settings {
  const sizeMb = Number(process.env.BENCH_SIZE_MB ?? 1024)
  if (!Number.isInteger(sizeMb) || sizeMb < 16) throw new Error(`BENCH_SIZE_MB must be a whole number of MB, at least 16 (got ${process.env.BENCH_SIZE_MB})`)
  const restoreRounds = Number(process.env.BENCH_RESTORE_ROUNDS ?? 5)
  if (!Number.isInteger(restoreRounds) || restoreRounds < 1) throw new Error(`BENCH_RESTORE_ROUNDS must be a whole number, at least 1 (got ${process.env.BENCH_RESTORE_ROUNDS})`)
  return { sizeMb, keyTables: process.env.BENCH_KEY_TABLES ?? '', cores: os.availableParallelism(), restoreRounds }
}

function prepare(settings: Settings, cluster: Cluster, work: string): Bench {
  const postmasterPid = Number(fs.readFileSync(path.join(cluster.dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0])
  const pgEnv = { ...process.env, PGPASSWORD: ADMIN_PASSWORD, PGCONNECT_TIMEOUT: '10' }
  const toolEnv: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NO_COLOR: '1',
    DB_MODE: 'url',
    DATABASE_URL: cluster.adminUrl(DB),
    BACKUP_DIR: path.join(work, 'backups'),
    LOG_FILE: path.join(work, 'deployment.log'),
    DEPLOY_DIR: work,
    APP_SERVICES: '',
    MIN_FREE_DISK_MB: '1',
    KEY_TABLES: settings.keyTables,
    // The contract's 10 minutes is for production; a slow shared machine must not cut a run short.
    DB_OPERATION_TIMEOUT: '86400',
  }
  return { settings, cluster, work, postmasterPid, pgEnv, toolEnv }
}

// ---- the database ------------------------------------------------------------------------------

// Random text that reads like words and compresses about 2:1 with gzip: random bytes as hex, with
// some digits turned into letters, letter pairs and spaces. Built per row from gen_random_bytes, so
// no two rows share text (a scalar subquery or a repeated string would be evaluated once and make
// the data compress far better than real data does). A pg_temp function: nothing of it is dumped.
const RANDOM_TEXT_FUNCTION = `
  CREATE FUNCTION pg_temp.rtext(n int) RETURNS text LANGUAGE sql VOLATILE AS $$
    SELECT replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(
      encode(gen_random_bytes(greatest(1, least(1024, n / 2))), 'hex'),
      '0', ' '), '1', 'e '), '2', 'th'), '3', 'o'), '4', 'n'), '5', 's'), '6', 'r'), '7', 'in'), '8', 'l'), '9', 'u')
  $$`

// Three tables of different widths, with the indexes and foreign keys a real schema has: a restore
// rebuilds them, and that is part of what a restore costs.
const SCHEMA = `
  CREATE EXTENSION pgcrypto;
  CREATE TABLE users (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name text NOT NULL, email text NOT NULL, bio text, locale text NOT NULL,
    created_at timestamptz NOT NULL, last_seen_at timestamptz);
  CREATE TABLE messages (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL, chat_id bigint NOT NULL, body text NOT NULL,
    created_at timestamptz NOT NULL, edited_at timestamptz);
  CREATE INDEX messages_chat_created ON messages (chat_id, created_at);
  CREATE INDEX messages_user ON messages (user_id);
  CREATE TABLE events (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL, kind text NOT NULL, payload jsonb NOT NULL, occurred_at timestamptz NOT NULL);
  CREATE INDEX events_user_occurred ON events (user_id, occurred_at);`

const FIRST_NAMES = `ARRAY['Anna','Ben','Chloé','Dmitri','Elif','Farid','Greta','Hiro','Ines','Jonas','Kasia','Liam','Mia','Noah','Olga','Pablo','Quinn','Rosa','Sven','Tara','Umar','Vera','Wen','Ximena','Yusuf','Zoe','Lars','Maja','Nils','Ivan']`
const LAST_NAMES = `ARRAY['Smith','Müller','Rossi','García','Novak','Kowalski','Nguyen','Ivanova','Jensen','Dubois','Silva','Yilmaz','Tanaka','Kim','Larsen','Moreau','Costa','Weber','Horvat','Berg','Petrov','Santos','Fischer','Lopez','Meyer','Schulz','Bianchi','Koch','Svoboda','Ali']`

const INSERT_USERS = `
  INSERT INTO users (name, email, bio, locale, created_at, last_seen_at)
  SELECT f || ' ' || l,
         lower(f || '.' || l) || (random() * 9999)::int || '@' || (ARRAY['gmail.com','yahoo.com','proton.me','outlook.com','icloud.com','web.de'])[1 + floor(random() * 6)::int],
         CASE WHEN random() < 0.1 THEN NULL ELSE pg_temp.rtext(40 + (random() * 400)::int) END,
         (ARRAY['en','de','fr','ru','es','it','nl','pl'])[1 + floor(random() * 8)::int],
         c, c + random() * interval '400 days'
  FROM (SELECT (${FIRST_NAMES})[1 + floor(random() * 30)::int] AS f, (${LAST_NAMES})[1 + floor(random() * 30)::int] AS l,
               now() - random() * interval '3 years' AS c
        FROM generate_series(1, $1::int)) s`

const INSERT_MESSAGES = `
  INSERT INTO messages (user_id, chat_id, body, created_at, edited_at)
  SELECT 1 + floor(random() * $2::int)::bigint, 1 + floor(random() * ($2::int / 5 + 1))::bigint,
         pg_temp.rtext(20 + (random() * 900)::int), c,
         CASE WHEN random() < 0.08 THEN c + random() * interval '2 hours' END
  FROM (SELECT now() - random() * interval '3 years' AS c FROM generate_series(1, $1::int)) s`

const INSERT_EVENTS = `
  INSERT INTO events (user_id, kind, payload, occurred_at)
  SELECT 1 + floor(random() * $2::int)::bigint,
         (ARRAY['login','search','view_offer','reserve','pay','cancel','rate','logout'])[1 + floor(random() * 8)::int],
         jsonb_build_object(
           'session', md5(random()::text),
           'ip', format('%s.%s.%s.%s', (random() * 255)::int, (random() * 255)::int, (random() * 255)::int, (random() * 255)::int),
           'user_agent', (ARRAY['Mozilla/5.0 (X11; Linux x86_64)','Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X)','TelegramBot (like TwitterBot)','okhttp/4.12.0','python-requests/2.31'])[1 + floor(random() * 5)::int],
           'path', '/api/v1/' || (ARRAY['offers','orders','stores','users','search'])[1 + floor(random() * 5)::int] || '/' || (random() * 100000)::int,
           'amount', round((random() * 500)::numeric, 2),
           'items', jsonb_build_array((random() * 1e6)::int, (random() * 1e6)::int, (random() * 1e6)::int),
           'note', pg_temp.rtext(10 + (random() * 300)::int)),
         now() - random() * interval '3 years'
  FROM generate_series(1, $1::int)`

// Rough bytes per row including indexes; only used to size the first round, later rounds use
// the growth actually measured.
const BYTES_PER_ROW = { users: 420, messages: 720, events: 560 }
const ROUNDS = 8

/**
 * Users first (about a tenth of the size), then messages and events in rounds on two sessions in
 * parallel, until pg_database_size reaches the target. Then the foreign keys, and VACUUM FREEZE so
 * that no measured pg_dump pays for setting hint bits on first read.
 */
async function buildDatabase(bench: Bench): Promise<DataSet> {
  step(`Building a ${bench.settings.sizeMb} MB database (random text, timestamps, jsonb)`)
  const started = performance.now()
  const target = bench.settings.sizeMb * MB
  await bench.cluster.query(`CREATE DATABASE ${DB} TEMPLATE template0`)
  const sessions = [new pg.Client(bench.cluster.adminUrl(DB)), new pg.Client(bench.cluster.adminUrl(DB))] as const
  const rows = { users: 0, messages: 0, events: 0 }
  try {
    await Promise.all(sessions.map((s) => s.connect()))
    const [a, b] = sessions
    await a.query(SCHEMA)
    await Promise.all(sessions.map((s) => s.query(RANDOM_TEXT_FUNCTION)))
    const users = Math.max(1000, Math.round((target * 0.1) / BYTES_PER_ROW.users))
    rows.users = (await a.query(INSERT_USERS, [users])).rowCount ?? 0

    const roundBytes = (target * 0.9) / ROUNDS
    const fullRound = { messages: Math.round((roundBytes * 2) / 3 / BYTES_PER_ROW.messages), events: Math.round(roundBytes / 3 / BYTES_PER_ROW.events) }
    let size = await databaseSize(a)
    let bytesPerFullRound = roundBytes
    for (let round = 1; size < target * 0.995 && round <= 10 * ROUNDS; round++) {
      const fraction = Math.max(0.02, Math.min(1, (target - size) / bytesPerFullRound))
      const [m, e] = await Promise.all([
        a.query(INSERT_MESSAGES, [Math.ceil(fullRound.messages * fraction), rows.users]),
        b.query(INSERT_EVENTS, [Math.ceil(fullRound.events * fraction), rows.users]),
      ])
      rows.messages += m.rowCount ?? 0
      rows.events += e.rowCount ?? 0
      const grown = await databaseSize(a)
      bytesPerFullRound = (grown - size) / fraction
      size = grown
      progress(`  round ${round}: ${mb(size)} of ${mb(target)}`)
    }
    progress('')
    await a.query(`ALTER TABLE messages ADD CONSTRAINT messages_user_fk FOREIGN KEY (user_id) REFERENCES users (id);
                   ALTER TABLE events ADD CONSTRAINT events_user_fk FOREIGN KEY (user_id) REFERENCES users (id);
                   DROP FUNCTION pg_temp.rtext(int); DROP EXTENSION pgcrypto;`)
  } finally {
    await Promise.all(sessions.map((s) => s.end().catch(() => undefined)))
  }
  await bench.cluster.query('VACUUM (FREEZE, ANALYZE)', DB)
  const [{ size } = { size: '0' }] = await bench.cluster.query<{ size: string }>(`SELECT pg_database_size('${DB}')::text AS size`)
  const tables: TableInfo[] = []
  for (const [name, n] of Object.entries(rows)) {
    const [{ bytes } = { bytes: '0' }] = await bench.cluster.query<{ bytes: string }>(`SELECT pg_total_relation_size('${name}')::text AS bytes`, DB)
    tables.push({ name, rows: n, bytes: Number(bytes) })
  }
  return { seconds: (performance.now() - started) / 1000, sizeBytes: Number(size), tables }
}

async function databaseSize(session: pg.Client): Promise<number> {
  const result = await session.query<{ size: string }>(`SELECT pg_database_size(current_database())::text AS size`)
  return Number(result.rows[0]?.size ?? 0)
}

/** Counts every table of `database` and fails the benchmark if a restore lost or gained rows. */
async function checkRowCounts(bench: Bench, database: string, data: DataSet, what: string): Promise<void> {
  for (const table of data.tables) {
    const [{ n } = { n: '-1' }] = await bench.cluster.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${table.name}`, database)
    if (Number(n) !== table.rows) throw new Error(`${what}: ${table.name} has ${n} rows, expected ${table.rows}`)
  }
  console.log(`  ${what}: every table has the rows it had before (${data.tables.map((t) => `${count(t.rows)} ${t.name}`).join(', ')})`)
}

// ---- backups -----------------------------------------------------------------------------------

function pgArgs(bench: Bench, database: string): string {
  return `-h 127.0.0.1 -p ${bench.cluster.port} -U admin --dbname ${database}`
}

/** The same pg_dump invocation as lib/commands/postgres.ts pgDumpCommand, as a shell word list. */
function pgDump(bench: Bench): string {
  return `pg_dump --format=plain --no-owner ${pgArgs(bench, DB)}`
}

async function shell(bench: Bench, label: string, script: string): Promise<Measurement> {
  progress(`  running: ${label}`)
  const result = await measure(label, ['bash', '-o', 'pipefail', '-c', script], { env: bench.pgEnv, postmasterPid: bench.postmasterPid })
  progress('')
  if (result.exitCode !== 0) throw new Error(`${label} failed (exit ${result.exitCode}): ${result.stderr.trim().split('\n').slice(-5).join(' | ')}`)
  console.log(`  ${label}: ${seconds(result.seconds)}`)
  return result
}

async function measureBaselineBackup(bench: Bench): Promise<Measurement & { file: string; fileBytes: number }> {
  step(`Backup, baseline: pg_dump | gzip -${GZIP_LEVEL} > file`)
  const file = path.join(bench.work, 'baseline.sql.gz')
  const result = await shell(bench, `pg_dump | gzip -${GZIP_LEVEL}`, `${pgDump(bench)} | gzip -${GZIP_LEVEL} > ${file}`)
  return { ...result, file, fileBytes: fs.statSync(file).size }
}

async function measureToolBackup(bench: Bench): Promise<(Measurement & { backupId: string; fileBytes: number }) | null> {
  step('Backup, the tool: scripts/backup.sh --json (dump, verification, index, retention)')
  const result = await runTool('backup', ['--json', '--verbose'], bench)
  if (!result) return null
  const record = JSON.parse(result.stdout) as { backup_id: string; file_size_bytes: number }
  return { ...result, backupId: record.backup_id, fileBytes: record.file_size_bytes }
}

async function measurePigzReference(bench: Bench): Promise<Measurement & { fileBytes: number }> {
  step(`Reference: pg_dump | pigz -${GZIP_LEVEL} -p ${bench.settings.cores} > file (the tool's pipeline without its checks)`)
  const file = path.join(bench.work, 'pigz.sql.gz')
  const result = await shell(bench, `pg_dump | pigz -${GZIP_LEVEL} -p ${bench.settings.cores}`, `${pgDump(bench)} | pigz -${GZIP_LEVEL} -p ${bench.settings.cores} > ${file}`)
  const fileBytes = fs.statSync(file).size
  fs.rmSync(file) // only its size is needed; keep the disk for the restores
  return { ...result, fileBytes }
}

async function measureBareDump(bench: Bench): Promise<Measurement> {
  step('Reference: pg_dump > /dev/null (no compression: the floor for any backup)')
  return shell(bench, 'pg_dump > /dev/null', `${pgDump(bench)} > /dev/null`)
}

/** The size of the plain dump, to show how compressible the data is. Not timed. */
function plainDumpBytes(bench: Bench, gzFile: string): number {
  progress('  measuring the plain dump size (gzip -dc | wc -c, not timed)')
  const out = execFileSync('bash', ['-o', 'pipefail', '-c', `gzip -dc ${gzFile} | wc -c`], { encoding: 'utf8', env: bench.pgEnv })
  progress('')
  return Number(out.trim())
}

// ---- restores ----------------------------------------------------------------------------------

/** Alternates baseline and tool restores, so that both meet the same noise; a checkpoint precedes each. */
async function measureRestores(bench: Bench, baselineFile: string, toolSource: string, data: DataSet): Promise<{ baselineRestores: Measurement[]; toolRestores: Measurement[] }> {
  const baselineRestores: Measurement[] = []
  const toolRestores: Measurement[] = []
  for (let round = 1; round <= bench.settings.restoreRounds; round++) {
    step(`Restore round ${round} of ${bench.settings.restoreRounds}`)
    await bench.cluster.query('CHECKPOINT')
    baselineRestores.push(await measureBaselineRestore(bench, baselineFile, data))
    await bench.cluster.query('CHECKPOINT')
    const tool = await measureToolRestore(bench, toolSource, data)
    if (tool) toolRestores.push(tool)
  }
  return { baselineRestores, toolRestores }
}

async function measureBaselineRestore(bench: Bench, file: string, data: DataSet): Promise<Measurement> {
  const target = `${DB}_baseline_restore`
  await bench.cluster.query(`CREATE DATABASE ${target} TEMPLATE template0`)
  try {
    const result = await shell(bench, 'gunzip -c file | psql -q -v ON_ERROR_STOP=1 (baseline, into an empty database)', `gunzip -c ${file} | psql -X -q -v ON_ERROR_STOP=1 ${pgArgs(bench, target)} > /dev/null`)
    await checkRowCounts(bench, target, data, 'baseline restore')
    return result
  } finally {
    await bench.cluster.query(`DROP DATABASE IF EXISTS ${target} WITH (FORCE)`)
  }
}

async function measureToolRestore(bench: Bench, source: string, data: DataSet): Promise<Measurement | null> {
  const result = await runTool('restore', [source, '--yes', '--verbose'], bench)
  if (result) await checkRowCounts(bench, DB, data, `tool restore (live database ${DB}, ${mb(data.sizeBytes)})`)
  return result
}

/**
 * tsx compiles each TypeScript file once and caches the result; the first run after a change also
 * starts an esbuild process (about 12 MB). The operator's daily runs find the cache warm, so the
 * measured runs do too.
 */
function warmUpTsx(bench: Bench): void {
  step('Warming up tsx\'s compile cache: backup.sh --help, restore.sh --help (not measured)')
  for (const script of ['backup', 'restore']) execFileSync(path.join(ROOT, 'scripts', `${script}.sh`), ['--help'], { env: bench.toolEnv, stdio: 'ignore' })
}

// A tool run that fails is retried (both scripts leave everything as it was when they fail) and
// every failed attempt is reported: a benchmark that hides failures would flatter the tool.
const TOOL_ATTEMPTS = Number(process.env.BENCH_TOOL_ATTEMPTS ?? 3)
const failedAttempts: { label: string; seconds: number; error: string }[] = []

/** A contract script the way an operator runs it: its .sh wrapper, no terminal. Null: it never succeeded. */
async function runTool(script: string, args: string[], bench: Bench): Promise<Measurement | null> {
  const label = `${script}.sh ${args.filter((a) => a !== '--verbose').join(' ')}`.trim()
  for (let attempt = 1; ; attempt++) {
    progress(`  running: ${label}`)
    const result = await measure(label, [path.join(ROOT, 'scripts', `${script}.sh`), ...args], {
      env: bench.toolEnv,
      cwd: ROOT,
      postmasterPid: bench.postmasterPid,
    })
    progress('')
    if (result.exitCode === 0) {
      console.log(`  ${label}: ${seconds(result.seconds)}`)
      return result
    }
    const error = result.lines.filter((l) => /^\[[^\]]+\] ERROR: /.test(l.text)).map((l) => logMessage(l)).join(' / ')
    failedAttempts.push({ label, seconds: result.seconds, error: error || `exit code ${result.exitCode}` })
    console.log(`  ${label}: attempt ${attempt} FAILED after ${seconds(result.seconds)} (exit ${result.exitCode}): ${error}`)
    if (attempt >= TOOL_ATTEMPTS) return null
  }
}

// ---- restoring from the bucket ------------------------------------------------------------------

/**
 * Disaster recovery's cost: the tool's backup copied off-site (age-encrypted, to the tests' s3rver
 * over HTTPS on 127.0.0.1), the local file deleted, then `restore <id>`: download, decrypt, verify
 * against the recorded checksums, restore. Compared with the tool's restores of the local file above.
 */
async function measureOffsiteRestore(bench: Bench, backupId: string, data: DataSet): Promise<Measurement | null> {
  step('Off-site: the same backup restored from the bucket (BENCH_OFFSITE=0 leaves this out)')
  const s3 = await startS3Server()
  try {
    const identity = path.join(bench.work, 'bench.agekey')
    execFileSync('age-keygen', ['-o', identity], { stdio: 'ignore' })
    const recipient = execFileSync('age-keygen', ['-y', identity], { encoding: 'utf8' }).trim()
    const offsite = { ...bench, toolEnv: { ...bench.toolEnv, ...s3.env({ BACKUP_AGE_RECIPIENT: recipient, BACKUP_AGE_IDENTITY_FILE: identity }), NODE_EXTRA_CA_CERTS: s3.caFile } }
    if (!(await runTool('backup', ['--offsite-sync'], offsite))) return null
    fs.rmSync(path.join(String(bench.toolEnv.BACKUP_DIR), `${backupId}.sql.gz`))
    await bench.cluster.query('CHECKPOINT')
    const result = await runTool('restore', [backupId, '--yes', '--verbose'], offsite)
    if (result) await checkRowCounts(bench, DB, data, 'restore from the bucket')
    return result
  } finally {
    await s3.stop()
  }
}

function reportOffsiteRestore(fromBucket: Measurement | null, localRestores: Measurement[]): void {
  const local = medianRun(localRestores)
  if (!fromBucket || !local) {
    console.log('  restore from the bucket: no successful run to compare (see the attempts above)')
    return
  }
  console.log(`  restore <id> from the bucket (download + age decrypt + verify + restore): ${seconds(fromBucket.seconds)}, peak ${mb(fromBucket.peakRssBytes)}`)
  console.log(`  against the local file's restore (median of ${localRestores.length}): ${seconds(local.seconds)}: ${(fromBucket.seconds / local.seconds).toFixed(2)}x`)
}

// ---- where the tool's time goes ----------------------------------------------------------------

interface Phase {
  name: string
  /** the log line that starts it; null: the process start */
  from: RegExp | null
  /** the log line that ends it; null: the process exit */
  to: RegExp | null
  /** look for `from` only after this line (a message that appears twice) */
  after?: RegExp
}

// Phases are read from the scripts' own log lines (INFO, and DEBUG `$ command` with --verbose),
// timestamped here to the millisecond as they arrive. If the messages change, a phase shows n/a and
// the full timeline below still tells the story.
const BACKUP_PHASES: Phase[] = [
  { name: 'startup: tsx, node, config', from: null, to: /^Starting database backup/ },
  { name: 'checks: disk, pg_dump version, lock, index', from: /^Starting database backup/, to: /^Creating backup:/ },
  { name: 'dump: pg_dump | rows | pigz | sha256, inflate a copy > file, fsync', from: /^Creating backup:/, to: /^Backup created:/ },
  { name: 'verify: trailer, inflated size (checked while writing)', from: /^Verifying backup integrity/, to: /^Verification successful/ },
  { name: 'publish, index, retention', from: /^Verification successful/, to: /^Backup complete:/ },
  { name: 'exit', from: /^Backup complete:/, to: null },
]

// The restore is done when the services run on the restored database; the safety backup of the
// replaced database (renamed aside at the swap) comes after and keeps nobody waiting.
const UNTIL_LIVE: Phase = { name: 'restore, until the restored database is live (the operator waits this long)', from: null, to: /^Creating safety backup/ }
const SAFETY_BACKUP: Phase = { name: 'safety backup of the replaced database, then dropping it', from: /^Creating safety backup/, to: /^Restore successful/ }
const RESTORE_PHASES: Phase[] = [
  { name: 'startup: node, tsx, config', from: null, to: /^Starting database restore/ },
  { name: 'checks: file (gzip, size), connection, privileges, disk', from: /^Verifying backup integrity/, to: /^Creating fresh database/ },
  { name: 'create scratch database', from: /^Creating fresh database/, to: /^Restoring from backup/ },
  { name: 'restore: file | sha256 | gunzip | guard (node) | psql', from: /^Restoring from backup/, to: /^Restoration complete/ },
  { name: 'verify restored: checksum, COPY tags vs record, tables', from: /^Verifying restored data/, to: /^Verification successful:/ },
  { name: 'swap by rename (services: none here)', from: /^Dropping existing database/, to: /^Creating safety backup/ },
  UNTIL_LIVE,
  SAFETY_BACKUP,
  { name: '  of which dump | pigz -1 > file', from: /^Creating backup:/, to: /^Backup created:/, after: /^Creating safety backup/ },
  { name: 'exit', from: /^Restore successful/, to: null },
]

/** The message of a contract log line, without `[timestamp] LEVEL: `; null for other output. */
function logMessage(line: TimedLine): string | null {
  const match = /^\[[^\]]+\] (?:DEBUG|INFO|WARN|ERROR): (.*)$/.exec(line.text)
  return match ? match[1]! : null
}

/** When a phase started and ended, in seconds since the command started; null if its lines are missing. */
function phaseWindow(m: Measurement, phase: Phase): { start: number; end: number } | null {
  const messages = m.lines.map((l) => ({ at: l.at, text: logMessage(l) })).filter((l): l is { at: number; text: string } => l.text !== null)
  let from = 0
  if (phase.after) {
    from = messages.findIndex((l) => phase.after!.test(l.text))
    if (from < 0) return null
  }
  const start = phase.from ? messages.findIndex((l, i) => i >= from && phase.from!.test(l.text)) : -1
  if (phase.from && start < 0) return null
  const startAt = start < 0 ? 0 : messages[start]!.at
  if (!phase.to) return { start: startAt, end: m.seconds }
  const end = messages.findIndex((l, i) => i > start && phase.to!.test(l.text))
  return end < 0 ? null : { start: startAt, end: messages[end]!.at }
}

function phaseSeconds(m: Measurement, phase: Phase): number | null {
  const window = phaseWindow(m, phase)
  return window && window.end - window.start
}

function printPhases(m: Measurement, phases: Phase[]): void {
  table(
    ['phase', 'seconds', 'share', 'peak RSS'],
    phases.map((p) => {
      const w = phaseWindow(m, p)
      if (!w) return [p.name, 'n/a', '', '']
      const peak = Math.max(0, ...m.rssSeries.filter((s) => s.at >= w.start && s.at <= w.end).map((s) => s.bytes))
      return [p.name, (w.end - w.start).toFixed(1), percent((w.end - w.start) / m.seconds), peak ? mb(peak) : '']
    }),
    'lrrr',
  )
}

/** Every log line with when it arrived and how long until the next one: the raw story. */
function printTimeline(m: Measurement): void {
  const messages = m.lines.map((l) => ({ at: l.at, text: logMessage(l) })).filter((l): l is { at: number; text: string } => l.text !== null)
  table(
    ['at s', 'for s', 'log line (--verbose)'],
    messages.map((l, i) => [l.at.toFixed(2), ((messages[i + 1]?.at ?? m.seconds) - l.at).toFixed(2), truncate(l.text, 110)]),
    'rrl',
  )
}

// ---- report ------------------------------------------------------------------------------------

function printSetup(bench: Bench): void {
  const version = (argv: string[]) => {
    try {
      return execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n')[0]
    } catch {
      return 'not found'
    }
  }
  step('Setup')
  console.log(`  ${bench.settings.cores} CPUs, ${mb(os.totalmem())} RAM, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} before starting`)
  console.log(`  ${version(['pg_dump', '--version'])}; ${version(['pigz', '--version'])}; ${version(['gzip', '--version'])}; node ${process.version}`)
  console.log(`  throwaway cluster on 127.0.0.1:${bench.cluster.port} (fsync=off, full_page_writes=off: restores here are faster than on a real disk)`)
  console.log(`  tool env: DB_MODE=url APP_SERVICES='' KEY_TABLES='${bench.settings.keyTables}'${bench.settings.keyTables ? '' : ' (the two largest tables are counted)'}`)
}

function printDatabase(data: DataSet): void {
  console.log(`  built in ${seconds(data.seconds)}; pg_database_size: ${mb(data.sizeBytes)}`)
  table(
    ['table', 'rows', 'size incl. indexes'],
    data.tables.map((t) => [t.name, count(t.rows), mb(t.bytes)]),
  )
}

function printReport(r: Results): void {
  const { toolBackup } = r
  const b = r.baselineBackup.seconds
  const baselineRestore = medianRun(r.baselineRestores)!
  const toolRestore = medianRun(r.toolRestores)
  const rs = baselineRestore.seconds
  const lives = r.toolRestores.map((m) => phaseSeconds(m, UNTIL_LIVE)).filter((x): x is number => x !== null)
  const untilLive = median(lives)
  const n = `median of ${r.baselineRestores.length}`

  step('Data')
  console.log(`  database ${mb(r.data.sizeBytes)}; plain dump ${mb(r.dumpBytes)}; gzip -${GZIP_LEVEL} ${mb(r.baselineBackup.fileBytes)} (${(r.dumpBytes / r.baselineBackup.fileBytes).toFixed(2)}:1); ` +
    `pigz -${GZIP_LEVEL} ${mb(r.pigzBackup.fileBytes)}; the tool's file ${toolBackup ? mb(toolBackup.fileBytes) : 'none (failed)'}`)

  step('Measurements (wall time; memory of the whole process tree; CPU seconds per process)')
  const row = (label: string, m: Measurement | null, baseline: number): string[] =>
    m
      ? [label, m.seconds.toFixed(1), `${(m.seconds / baseline).toFixed(2)}x`, mb(m.peakRssBytes), mb(m.peakPssBytes), m.serverCpuSeconds.toFixed(1), `${(m.otherCpuSeconds / m.seconds).toFixed(2)} cores`, cpuSummary(m)]
      : [label, 'FAILED', '', '', '', '', '', `every attempt failed, see below`]
  table(['measurement', 'wall s', 'vs baseline', 'peak RSS', 'peak PSS', 'server CPU s', 'others meanwhile', 'CPU s of the tree'], [
    row(`pg_dump | gzip -${GZIP_LEVEL} (baseline)`, r.baselineBackup, b),
    row('backup.sh --json', toolBackup, b),
    row(`${r.pigzBackup.label} (reference)`, r.pigzBackup, b),
    row(`${r.bareDump.label} (reference)`, r.bareDump, b),
    row(`gunzip | psql (baseline, ${n})`, baselineRestore, rs),
    row(`restore.sh <id> --yes, total (${n})`, toolRestore, rs),
    ...(untilLive === null ? [] : [[`  of which until the restored database is live (${n})`, untilLive.toFixed(1), `${(untilLive / rs).toFixed(2)}x`, '', '', '', '', '']]),
  ], 'lrrrrrrl')
  const best = (values: number[]) => Math.min(...values).toFixed(1)
  if (lives.length) console.log(`  best of each: gunzip | psql ${best(r.baselineRestores.map((m) => m.seconds))} s; restore.sh until live ${best(lives)} s, total ${best(r.toolRestores.map((m) => m.seconds))} s`)
  console.log('  every restore round, in the order run (seconds):')
  r.baselineRestores.forEach((base, i) => {
    const tool = r.toolRestores[i]
    const live = tool && phaseSeconds(tool, UNTIL_LIVE)
    console.log(`    round ${i + 1}: gunzip | psql ${base.seconds.toFixed(1)}; restore.sh until live ${live?.toFixed(1) ?? 'n/a'}, total ${tool?.seconds.toFixed(1) ?? 'failed'}`)
  })
  console.log('  peak RSS: the sum over the command and all its descendants (node, pg_dump, pigz, psql), sampled every 100 ms')
  console.log('  from /proc; the PostgreSQL server backends are not its children and are not counted (their CPU is the')
  console.log('  "server CPU" column). PSS splits pages shared between processes (two node processes share their binary).')
  console.log(`  "others meanwhile": CPU used by the rest of the machine during the measurement, out of ${os.availableParallelism()} cores (noise).`)

  const restorePeak = r.toolRestores.reduce<Measurement | null>((top, m) => (top && top.peakRssBytes >= m.peakRssBytes ? top : m), null)
  if (toolBackup || restorePeak) step('Memory at the peak (for restore.sh: the highest of its runs)')
  for (const m of [toolBackup, restorePeak]) {
    if (m) console.log(`  ${m.label}: ${mb(m.peakRssBytes)} = ${m.rssAtPeak.map((p) => `${p.name} ${mb(p.bytes)}`).join(', ')}`)
  }
  if (toolBackup) {
    step('Where backup.sh spends its time')
    printPhases(toolBackup, BACKUP_PHASES)
  }
  if (toolRestore) {
    step(`Where restore.sh spends its time (the run with the median total)`)
    printPhases(toolRestore, RESTORE_PHASES)
  }

  step('Goals (from the issue)')
  const ratioGoal = (name: string, m: { seconds: number } | null, baseline: number, limit: number): string[] => {
    if (!m) return [name, 'failed', `<= ${limit.toFixed(2)}x`, 'NOT MET']
    const ratio = m.seconds / baseline
    return [name, `${ratio.toFixed(2)}x`, `<= ${limit.toFixed(2)}x`, ratio <= limit ? 'met' : 'NOT MET']
  }
  const rssGoal = (name: string, m: Measurement | null): string[] => {
    if (!m) return [name, 'failed', `< ${GOALS.peakRssMb} MB`, 'NOT MET']
    return [name, mb(m.peakRssBytes), `< ${GOALS.peakRssMb} MB`, m.peakRssBytes < GOALS.peakRssMb * MB ? 'met' : 'NOT MET']
  }
  table(['goal', 'measured', 'limit', 'status'], [
    ratioGoal(`backup.sh vs pg_dump | gzip -${GZIP_LEVEL}`, toolBackup, b, GOALS.backupRatio),
    ratioGoal(`restore.sh until the restored database is live vs gunzip | psql (${n})`, untilLive === null ? null : { seconds: untilLive }, rs, GOALS.restoreRatio),
    rssGoal('peak RSS of backup.sh and its children', toolBackup),
    rssGoal('peak RSS of restore.sh and its children (highest run)', restorePeak),
  ], 'lrrl')
  if (toolRestore) {
    console.log(`  For information: restore.sh including the safety backup of the replaced database took ${toolRestore.seconds.toFixed(1)} s,`)
    console.log(`  ${(toolRestore.seconds / rs).toFixed(2)}x the baseline, which keeps no copy of what it replaces. That backup runs after the`)
    console.log('  restored database is live; the services do not wait for it.')
  }

  step('Failed attempts of the tool (retried; not in the figures above)')
  if (failedAttempts.length === 0) console.log('  none')
  for (const f of failedAttempts) console.log(`  ${f.label}: failed after ${f.seconds.toFixed(1)} s: ${f.error}`)

  for (const [name, m] of [['backup.sh', toolBackup], ['restore.sh', toolRestore]] as const) {
    if (!m) continue
    step(`Timeline of ${name}`)
    printTimeline(m)
  }
}

/** The run with the median wall time (the lower middle one of an even count); null when there are none. */
function medianRun(runs: Measurement[]): Measurement | null {
  const sorted = [...runs].sort((a, b) => a.seconds - b.seconds)
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? null
}

function median(values: number[]): number | null {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor((sorted.length - 1) / 2)] ?? null
}

function cpuSummary(m: Measurement): string {
  const entries = Object.entries(m.treeCpu).filter(([, s]) => s >= 0.05).sort((a, b) => b[1] - a[1])
  const total = Object.values(m.treeCpu).reduce((a, b) => a + b, 0)
  return `${total.toFixed(1)}: ${entries.map(([name, s]) => `${name} ${s.toFixed(1)}`).join(', ')}`
}

// ---- formatting --------------------------------------------------------------------------------

function step(text: string): void {
  console.log(`\n== ${text}`)
}

/** A transient status line on a terminal; nothing when the output is a file. */
function progress(text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`)
}

/** align: one letter per column, l or r; by default the first column left and the others right. */
function table(headers: string[], rows: string[][], align = 'l'): void {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const pad = (c: string, i: number) => ((align[i] ?? 'r') === 'l' ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))
  const line = (cells: string[]) => '  ' + cells.map(pad).join('  ').trimEnd()
  console.log(line(headers))
  console.log('  ' + widths.map((w) => '-'.repeat(w)).join('  '))
  for (const r of rows) console.log(line(r))
}

function mb(bytes: number): string {
  return `${Math.round(bytes / MB).toLocaleString('en-US')} MB`
}

function count(n: number): string {
  return n.toLocaleString('en-US')
}

function seconds(s: number): string {
  const whole = Math.round(s)
  return s >= 120 ? `${Math.floor(whole / 60)} min ${whole % 60} s` : `${s.toFixed(1)} s`
}

function percent(fraction: number): string {
  return `${Math.round(fraction * 100)}%`
}

function truncate(text: string, length: number): string {
  return text.length <= length ? text : `${text.slice(0, length - 1)}…`
}

// Last, so that every constant above is initialized before main() reads it.
await main()
