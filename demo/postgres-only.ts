// `npm run demo`: the main job on a throwaway sandbox. A temporary PostgreSQL cluster with sample
// data, a backup, a change to the data, a restore that undoes it, and the log file. Nothing
// outside a temporary directory is touched; everything is removed at the end.
import fs from 'node:fs'
import path from 'node:path'
import { startCluster } from '../test/support/pg-cluster.ts'
import { seedSampleData, tableChecksums } from '../test/support/sample-data.ts'
import { runScript, tempDir } from '../test/support/scripts.ts'

const work = tempDir('ttg-demo-')
const cluster = await startCluster()
try {
  await cluster.query('CREATE DATABASE toogoodtogo')
  await seedSampleData(cluster, 'toogoodtogo', 5000)
  const env = {
    DB_MODE: 'url',
    DATABASE_URL: cluster.adminUrl('toogoodtogo'),
    BACKUP_DIR: path.join(work, 'backups'),
    LOG_FILE: path.join(work, 'deployment.log'),
    DEPLOY_DIR: work,
    APP_SERVICES: '',
    MIN_FREE_DISK_MB: '100',
    KEY_TABLES: 'users,businesses',
  }
  step(`Sandbox PostgreSQL on 127.0.0.1:${cluster.port}, 5,000 sample users; work directory ${work}`)
  const before = await tableChecksums(cluster, 'toogoodtogo')

  step('backup scheduled')
  const backup = await show(runScript('backup', ['scheduled', '--json'], env))
  const record = JSON.parse(backup.stdout)

  step('Simulating a bad day: deleting every business')
  await cluster.query('DELETE FROM businesses', 'toogoodtogo')

  step(`restore ${record.backup_id} --yes`)
  await show(runScript('restore', [record.backup_id, '--yes'], env))
  const same = JSON.stringify(await tableChecksums(cluster, 'toogoodtogo')) === JSON.stringify(before)
  step(`Every table identical to before the backup: ${same ? 'yes' : 'NO'}`)

  step(`The log file (${env.LOG_FILE}):`)
  process.stdout.write(fs.readFileSync(env.LOG_FILE, 'utf8').split('\n').filter((l) => !l.includes(' DEBUG: ')).join('\n'))
  step(`backup_index.json record:\n${JSON.stringify(JSON.parse(fs.readFileSync(path.join(env.BACKUP_DIR, 'backup_index.json'), 'utf8')).backups[0], null, 2)}`)
  if (!same) process.exitCode = 1
} finally {
  cluster.stop()
  fs.rmSync(work, { recursive: true, force: true })
}

function step(text: string): void {
  process.stdout.write(`\n== ${text}\n`)
}

async function show(pending: ReturnType<typeof runScript>) {
  const result = await pending
  // With --json the log lines are on stderr and stdout holds the record, printed further down.
  process.stdout.write(result.stdout.startsWith('{') ? result.stderr : result.stdout + result.stderr)
  if (result.code !== 0) throw new Error(`exit code ${result.code}`)
  return result
}
