// `npm run bench:offsite`: how fast and how lean the off-site copy is, next to `rclone copyto` of
// the same file to the same server in the same run. It is not a test: it prints what it measured
// and whether the issue's goals are met, computed from the measurements.
//
// The server is the tests' s3rver over HTTPS on 127.0.0.1 (test/support/s3-server.ts), signatures
// checked. The file is random bytes, as incompressible as the gzip stream of a real backup. The
// toolkit's side is bench/offsite-run.ts in its own process, started the way scripts/run.sh starts
// a script, and measured with age as one process tree by bench/process-meter.ts.
//
//   OFFSITE_BENCH_MB      size of the generated backup file in MiB (default 400: the 1 GB benchmark
//                         database's backup is 406 MB)
//   OFFSITE_BENCH_ROUNDS  transfers of each kind, alternating which goes first (default 3); the
//                         medians are compared and every run is printed
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { DeleteObjectCommand } from '@aws-sdk/client-s3'
import { backupRecordSchema, type BackupRecord } from '../lib/db/backup-index.ts'
import { offsiteSettings } from '../lib/core/offsite-config.ts'
import { sha256OfFile } from '../lib/core/streams.ts'
import { requireCommands } from '../test/support/require-commands.ts'
import { startS3Server, type S3TestServer } from '../test/support/s3-server.ts'
import { ROOT, tempDir } from '../test/support/scripts.ts'
import { killCurrent, measure, type Measurement } from './process-meter.ts'

const GOALS = { uploadRatio: 1.2, peakRssMb: 150 }
const MB = 1024 * 1024
// The way scripts/run.sh starts every script: node with tsx's loader and a 1 MB young generation.
const NODE = [process.execPath, '--max-semi-space-size=1', '--import', path.join(ROOT, 'node_modules/tsx/dist/loader.mjs')]
const RUNNER = path.join(ROOT, 'bench/offsite-run.ts')

const sizeMb = Number(process.env.OFFSITE_BENCH_MB || 400)
const rounds = Number(process.env.OFFSITE_BENCH_ROUNDS || 3)

requireCommands({ age: 'age', 'age-keygen': 'age', rclone: 'rclone' })
const work = tempDir('ttg-bench-offsite-')
let server: S3TestServer | null = null
process.once('SIGINT', () => {
  killCurrent()
  void server?.stop().finally(() => {
    fs.rmSync(work, { recursive: true, force: true })
    process.exit(130)
  })
})

try {
  server = await startS3Server()
  await run(server)
} finally {
  await server?.stop()
  fs.rmSync(work, { recursive: true, force: true })
}

async function run(s3: S3TestServer): Promise<void> {
  const id = 'bench_20261201_030000'
  const file = path.join(work, `${id}.sql.gz`)
  log(`Generating a ${sizeMb} MiB backup file`)
  execFileSync('bash', ['-c', `head -c ${sizeMb}M /dev/urandom > "${file}"`])
  const identity = path.join(work, 'bench.agekey')
  execFileSync('age-keygen', ['-o', identity], { stdio: 'ignore' })
  const recipient = execFileSync('age-keygen', ['-y', identity], { encoding: 'utf8' }).trim()
  const vars = s3.env({ OFFSITE_S3_PREFIX: 'toolkit/', BACKUP_AGE_RECIPIENT: recipient, BACKUP_AGE_IDENTITY_FILE: identity })
  const settings = offsiteSettings(vars)
  if (!settings) throw new Error('off-site settings are off')
  const client = s3.client(settings)
  const remove = (key: string) => client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: key }))

  const toolkitEnv = { PATH: process.env.PATH, HOME: process.env.HOME, NO_COLOR: '1', NODE_EXTRA_CA_CERTS: s3.caFile, ...vars }
  // rclone as an operator would run it: its defaults (multipart above 200 MiB, 5 MiB chunks, 4 at
  // a time), configured by environment. The machine's AWS_CA_BUNDLE breaks rclone 1.60's
  // transport; Go reads the test CA from SSL_CERT_FILE.
  const rcloneEnv = {
    PATH: process.env.PATH,
    HOME: work,
    SSL_CERT_FILE: s3.caFile,
    RCLONE_CONFIG_BENCH_TYPE: 's3',
    RCLONE_CONFIG_BENCH_PROVIDER: 'Other',
    RCLONE_CONFIG_BENCH_ENDPOINT: s3.endpoint,
    RCLONE_CONFIG_BENCH_REGION: 'us-east-1',
    RCLONE_CONFIG_BENCH_ACCESS_KEY_ID: s3.accessKeyId,
    RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY: s3.secretAccessKey,
  }
  // a new name each round: rclone skips a copy whose destination already matches
  const remoteKey = (round: number) => `rclone/${id}-${round}.sql.gz`
  const remote = (round: number) => `bench:${s3.bucket}/${remoteKey(round)}`

  // One small upload first, not counted: tsx compiles the toolkit's files on their first run
  // after a change (an esbuild process of its own), which is not what an upload costs.
  const warmFile = path.join(work, 'bench_20261130_030000.sql.gz')
  execFileSync('bash', ['-c', `head -c 1M /dev/urandom > "${warmFile}"`])
  const warmRecord = path.join(work, 'warm.json')
  fs.writeFileSync(warmRecord, JSON.stringify(await recordFor(warmFile, 'bench_20261130_030000')))
  const warm = check(await measure('warm-up', [...NODE, RUNNER, 'upload', warmFile, warmRecord], { env: toolkitEnv, cwd: ROOT }))
  log(`warm-up upload of 1 MiB (not counted): ${secs(warm)}, peak ${mb(warm.peakRssBytes)} MB (${warm.rssAtPeak.map((p) => p.name.replace(' (tsx launcher)', '')).join(', ')})`)

  const upload = { rclone: [] as Measurement[], toolkit: [] as Measurement[] }
  const download = { rclone: [] as Measurement[], toolkit: [] as Measurement[] }
  let lastKey = ''
  for (let round = 1; round <= rounds; round++) {
    const roundId = `bench_20261201_03000${round}`
    const record = await recordFor(file, roundId)
    const recordFile = path.join(work, 'record.json')
    fs.writeFileSync(recordFile, JSON.stringify(record))
    const steps = [
      async () => upload.rclone.push(check(await measure('rclone copyto', ['rclone', 'copyto', file, remote(round)], { env: rcloneEnv }))),
      async () => upload.toolkit.push(check(await measure('toolkit upload', [...NODE, RUNNER, 'upload', file, recordFile], { env: toolkitEnv, cwd: ROOT }))),
    ]
    for (const step of round % 2 ? steps : [...steps].reverse()) await step()
    if (lastKey) {
      await remove(lastKey)
      await remove(`${lastKey}.json`)
      await remove(remoteKey(round - 1))
    }
    lastKey = `toolkit/${roundId}.sql.gz.age`
    log(`round ${round}: upload rclone ${secs(upload.rclone.at(-1))}, toolkit ${secs(upload.toolkit.at(-1))} (peak ${mb(upload.toolkit.at(-1)?.peakRssBytes ?? 0)} MB)`)
  }
  for (let round = 1; round <= rounds; round++) {
    const ours = path.join(work, 'toolkit-download.sql.gz')
    const theirs = path.join(work, 'rclone-download.sql.gz')
    const steps = [
      async () => download.rclone.push(check(await measure('rclone copyto (download)', ['rclone', 'copyto', remote(rounds), theirs], { env: rcloneEnv }))),
      async () => download.toolkit.push(check(await measure('toolkit download', [...NODE, RUNNER, 'download', lastKey, ours], { env: toolkitEnv, cwd: ROOT }))),
    ]
    for (const step of round % 2 ? steps : [...steps].reverse()) await step()
    if ((await sha256OfFile(ours)) !== (await sha256OfFile(file))) throw new Error('the downloaded file differs from the original')
    fs.rmSync(ours)
    fs.rmSync(theirs)
    log(`round ${round}: download rclone ${secs(download.rclone.at(-1))}, toolkit ${secs(download.toolkit.at(-1))} (peak ${mb(download.toolkit.at(-1)?.peakRssBytes ?? 0)} MB)`)
  }
  report(upload, download)
}

async function recordFor(file: string, backupId: string): Promise<BackupRecord> {
  const now = new Date().toISOString().slice(0, 19) + 'Z'
  const bytes = fs.statSync(file).size
  return backupRecordSchema.parse({
    backup_id: backupId, created_at: now, backup_type: 'manual', file_path: file, file_size_mb: Math.round(bytes / MB), file_size_bytes: bytes,
    database_name: 'bench', pg_dump_version: 'bench', compressed: true, sha256: await sha256OfFile(file), row_counts: {}, verified: true,
    verified_at: now, retention_until: now, artifact_id: null,
  })
}

function check(m: Measurement): Measurement {
  if (m.exitCode !== 0) throw new Error(`${m.label} failed (exit ${m.exitCode}): ${m.stderr.trim().split('\n').slice(-3).join(' | ')}`)
  return m
}

function report(upload: Record<'rclone' | 'toolkit', Measurement[]>, download: Record<'rclone' | 'toolkit', Measurement[]>): void {
  const median = (ms: Measurement[]) => {
    const sorted = ms.map((m) => m.seconds).sort((a, b) => a - b)
    const mid = Math.floor(sorted.length / 2)
    return sorted.length % 2 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2
  }
  const peak = (ms: Measurement[]) => Math.max(...ms.map((m) => m.peakRssBytes))
  const uploadRatio = median(upload.toolkit) / median(upload.rclone)
  const downloadRatio = median(download.toolkit) / median(download.rclone)
  const rows: [string, Measurement[], Measurement[] | null][] = [
    ['rclone copyto (upload, baseline)', upload.rclone, null],
    ['toolkit: age encrypt + multipart upload + verify + sidecar', upload.toolkit, upload.rclone],
    ['rclone copyto (download, baseline)', download.rclone, null],
    ['toolkit: download + age decrypt + verify + fsync', download.toolkit, download.rclone],
  ]
  const out: string[] = ['', `Off-site copy of a ${sizeMb} MiB backup to s3rver over HTTPS on 127.0.0.1 (${rounds} rounds, medians)`, '']
  out.push('| | median wall | runs | vs baseline | peak RSS (tree) |', '|---|---|---|---|---|')
  for (const [label, runs, baseline] of rows) {
    const ratio = baseline ? `${(median(runs) / median(baseline)).toFixed(2)}x` : '1.00x'
    out.push(`| ${label} | ${median(runs).toFixed(1)} s | ${runs.map((m) => m.seconds.toFixed(1)).join(', ')} | ${ratio} | ${mb(peak(runs))} MB |`)
  }
  const worst = upload.toolkit.reduce((a, b) => (b.peakRssBytes > a.peakRssBytes ? b : a))
  // process-meter calls the root node "tsx launcher"; here the root is node with tsx's loader, as in scripts/run.sh
  const named = (name: string) => name.replace('node (tsx launcher)', 'node')
  out.push('', `Toolkit upload at its peak RSS: ${worst.rssAtPeak.map((p) => `${named(p.name)} ${mb(p.bytes)} MB`).join(', ')}`)
  const cpu = (m: Measurement) => Object.entries(m.treeCpu).map(([name, s]) => `${named(name)} ${s.toFixed(1)} s`).join(', ')
  out.push(`CPU of the last toolkit upload: ${cpu(upload.toolkit.at(-1) ?? worst)}; of the last rclone upload: ${cpu(upload.rclone.at(-1) ?? worst)}`)
  out.push(`Other load on the machine during the last toolkit upload: ${(upload.toolkit.at(-1)?.otherCpuSeconds ?? 0).toFixed(1)} CPU s`)
  out.push('', `Goal: upload <= ${GOALS.uploadRatio}x rclone: ${uploadRatio.toFixed(2)}x ${uploadRatio <= GOALS.uploadRatio ? 'met' : 'NOT met'}`)
  out.push(`Goal: peak RSS < ${GOALS.peakRssMb} MB during the upload: ${mb(peak(upload.toolkit))} MB ${peak(upload.toolkit) < GOALS.peakRssMb * MB ? 'met' : 'NOT met'}`)
  out.push(`Download + decrypt vs rclone download: ${downloadRatio.toFixed(2)}x`, '')
  process.stdout.write(out.join('\n'))
}

function secs(m: Measurement | undefined): string {
  return m ? `${m.seconds.toFixed(1)} s` : '-'
}

function mb(bytes: number): number {
  return Math.round(bytes / MB)
}

function log(line: string): void {
  process.stdout.write(`[bench:offsite] ${line}\n`)
}
