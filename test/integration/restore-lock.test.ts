import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { acquireLock } from '../../lib/core/lock.ts'
import { startCluster, type Cluster } from '../support/pg-cluster.ts'
import { seedSampleData, tableChecksums } from '../support/sample-data.ts'
import { ROOT, runScript, tempDir, type ScriptResult, urlModeEnv } from '../support/scripts.ts'

// restore under the deploy lock, and no success while the server is down (url mode, a real
// PostgreSQL). The first restore is held at its safety backup (the test holds the backup lock), so
// the second one and the server going down come at a known moment.
let cluster: Cluster
let work: string
let env: Record<string, string>

beforeAll(async () => {
  cluster = await startCluster()
  await cluster.query('CREATE DATABASE shop')
  await seedSampleData(cluster, 'shop', 200)
  work = tempDir('ttg-restore-lock-')
  env = urlModeEnv(cluster.adminUrl('shop'), work)
})
afterAll(() => cluster?.stop())

it('a restore while a deploy holds the lock exits 1 naming it, nothing changed', async () => {
  const made = await runScript('backup', ['--json'], env)
  expect(made.code).toBe(0)
  const id = JSON.parse(made.stdout).backup_id as string
  const before = await tableChecksums(cluster, 'shop')
  const deploy = await acquireLock(path.join(work, '.deploy.lock'), { command: 'deploy v1.4.0', waitMs: 0, staleAfterMs: 60_000 })
  try {
    const result = await runScript('restore', [id, '--yes'], env)
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(new RegExp(`Another operation holds .*\\.deploy\\.lock: pid ${process.pid} on .*"deploy v1.4.0"`))
  } finally {
    deploy.release()
  }
  expect(await tableChecksums(cluster, 'shop')).toEqual(before)
  expect(await cluster.query(`SELECT datname FROM pg_database WHERE datname LIKE '%restore%'`)).toEqual([])
})

it('a second restore exits 1 naming the first; a server down after the swap is a failed restore, not "Restore successful"', async () => {
  const id = JSON.parse((await runScript('backup', ['--json'], env)).stdout).backup_id as string
  const backups = await acquireLock(path.join(env.BACKUP_DIR!, '.backup.lock'), { command: 'test: hold the safety backup', waitMs: 0, staleAfterMs: 60_000 })
  const first = startScript('restore', [id, '--yes'])
  try {
    await first.said(new RegExp(`Waiting for pid ${process.pid} \\("test: hold the safety backup"\\)`))
    const second = await runScript('restore', [id, '--yes'], env)
    expect(second.code).toBe(1)
    expect(second.stderr).toMatch(new RegExp(`Another operation holds .*\\.deploy\\.lock: pid \\d+ on .*"restore ${id}"`))
    // The swap is done; the server goes down before the restore's last step (the full disk).
    cluster.stop()
  } finally {
    backups.release()
  }
  const result = await first.done
  expect(result.code).toBe(1)
  expect(result.stdout).not.toContain('Restore successful')
  expect(result.stderr).toMatch(/The database was restored, but the server does not answer a query on shop: .*(refused|No such file|could not connect)/)
  expect(result.stderr).toContain('Restore failed')
  expect(fs.existsSync(path.join(work, '.deploy.lock'))).toBe(false)
})

/** A script in the background whose output can be waited on, line by line. */
function startScript(name: string, args: string[]): { said(pattern: RegExp): Promise<void>; done: Promise<ScriptResult> } {
  const child = spawn(path.join(ROOT, 'node_modules/.bin/tsx'), [path.join(ROOT, 'scripts', `${name}.ts`), ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, NO_COLOR: '1', ...env },
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  const done = new Promise<ScriptResult>((resolve) => child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr })))
  return {
    done,
    async said(pattern) {
      const deadline = Date.now() + 60_000
      while (!pattern.test(stdout + stderr)) {
        if (Date.now() > deadline || child.exitCode !== null) throw new Error(`${name} never said ${pattern}: ${stdout}${stderr}`)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    },
  }
}
