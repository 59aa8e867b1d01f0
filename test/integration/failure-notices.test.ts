import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import zlib from 'node:zlib'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { startHookServer, type HookServer } from '../support/hook.ts'
import { startCluster, type Cluster } from '../support/pg-cluster.ts'
import { seedSampleData } from '../support/sample-data.ts'
import { exec, ROOT, runScript, tempDir, urlModeEnv } from '../support/scripts.ts'

// Issue 22, item 1: every failure reaches the configured channel once, with the host, what failed,
// the state it left and the command to look further. The channel is set in .env.production only
// (as setup writes it), and received by a local HTTP server.
let cluster: Cluster
let hook: HookServer
let work: string
let env: Record<string, string>
let backupId: string

beforeAll(async () => {
  hook = await startHookServer()
  cluster = await startCluster()
  await cluster.query('CREATE DATABASE shop')
  await seedSampleData(cluster, 'shop', 50)
})
afterAll(() => {
  cluster?.stop()
  hook?.close()
})

beforeEach(async () => {
  work = tempDir('ttg-told-')
  fs.writeFileSync(path.join(work, '.env.production'), `# as setup-droplet writes it\nNOTIFY_WEBHOOK_URL=${hook.url}\n`, { mode: 0o600 })
  env = urlModeEnv(cluster.adminUrl('shop'), work)
  const made = await runScript('backup', ['--json'], env)
  expect(made.code).toBe(0)
  backupId = JSON.parse(made.stdout).backup_id
  hook.received.length = 0
})

function told(): string[] {
  return hook.received.map((body) => (JSON.parse(body) as { text: string }).text)
}

describe('a failure is told once through the configured channel', () => {
  it('a success tells nothing', async () => {
    expect((await runScript('backup', ['manual'], env)).code).toBe(0)
    expect(told()).toEqual([])
  })

  it('restore of a backup id that is not there (exit 2): nothing changed', async () => {
    const result = await runScript('restore', ['toogoodtogo_20200101_000000', '--yes'], env)
    expect(result.code).toBe(2)
    expect(told()).toHaveLength(1)
    const [text] = told()
    expect(text).toContain(`restore toogoodtogo_20200101_000000 --yes failed on ${os.hostname()} (exit 2): Backup toogoodtogo_20200101_000000 is not in`)
    expect(text).toContain('Nothing was changed: the live database is as it was.')
    expect(text).toContain(`Look further: tail -n 50 ${env.LOG_FILE}`)
  })

  it("a damaged backup's drill (exit 2): the live database untouched, the drill recorded failed", async () => {
    const record = JSON.parse(fs.readFileSync(path.join(env.BACKUP_DIR!, 'backup_index.json'), 'utf8')).backups.find((b: { backup_id: string }) => b.backup_id === backupId)
    const sql = zlib.gunzipSync(fs.readFileSync(record.file_path)).toString('utf8')
    fs.writeFileSync(record.file_path, zlib.gzipSync(sql.slice(0, Math.floor(sql.length / 2))))
    const result = await runScript('restore', ['--drill'], env)
    expect(result.code).toBe(2)
    expect(told()).toHaveLength(1)
    expect(told()[0]).toMatch(new RegExp(`^restore --drill failed on ${os.hostname()} \\(exit 2\\): .+ The live database was not touched; the failed drill is recorded as last_drill in backup_index.json. Look further: backup.sh --list$`))
    // The record the message points to says the same.
    const after = JSON.parse(fs.readFileSync(path.join(env.BACKUP_DIR!, 'backup_index.json'), 'utf8')).backups.find((b: { backup_id: string }) => b.backup_id === backupId)
    expect(after.last_drill.outcome).toBe('failed')
    const status = await runScript('status', ['--json'], env)
    expect(JSON.parse(status.stdout).last_drill).toMatchObject({ outcome: 'failed', backup_id: backupId })
    expect(status.stderr + status.stdout).not.toContain(hook.url)
    expect(told()).toHaveLength(1)
  })

  it('a confirmation nobody could give (no terminal, no --yes) is told; a mistyped flag is not', async () => {
    expect((await runScript('restore', [backupId], env)).code).toBe(1)
    expect(told()).toHaveLength(1)
    expect(told()[0]).toMatch(/restore .* failed on .*Refusing to continue without confirmation/)
    expect((await runScript('restore', ['--no-such-flag'], env)).code).toBe(1)
    expect((await runScript('backup', ['weekly'], env)).code).toBe(1)
    expect(told()).toHaveLength(1)
  })

  it('under systemd, a told failure leaves the marker that keeps the unit notifier quiet', async () => {
    const runtime = path.join(work, 'run')
    fs.mkdirSync(runtime)
    const invocation = 'a'.repeat(32)
    const result = await runScript('restore', ['toogoodtogo_20200101_000000', '--yes'], { ...env, RUNTIME_DIRECTORY: runtime, INVOCATION_ID: invocation })
    expect(result.code).toBe(2)
    expect(told()).toHaveLength(1)
    expect(fs.existsSync(path.join(runtime, `told-${invocation}`))).toBe(true)
  })

  it('an undelivered notification leaves no marker: the unit notifier tells it', async () => {
    const runtime = path.join(work, 'run')
    fs.mkdirSync(runtime)
    const invocation = 'b'.repeat(32)
    fs.writeFileSync(path.join(work, '.env.production'), 'NOTIFY_WEBHOOK_URL=http://127.0.0.1:1/hook\n')
    const result = await runScript('restore', ['toogoodtogo_20200101_000000', '--yes'], { ...env, RUNTIME_DIRECTORY: runtime, INVOCATION_ID: invocation })
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/WARN: webhook notification failed/)
    expect(fs.readdirSync(runtime)).toEqual([])
  })

  it('a script that told its failure itself is not told again; the marker says it was told', async () => {
    const fixture = (how: string, runtime: string) => exec([path.join(ROOT, 'node_modules/.bin/tsx'), path.join(ROOT, 'test/fixtures/notify/told.ts'), how], { ...env, RUNTIME_DIRECTORY: runtime, INVOCATION_ID: 'c'.repeat(32) })
    for (const how of ['told', 'quiet']) {
      const runtime = tempDir('ttg-run-')
      expect((await fixture(how, runtime)).code).toBe(5)
      expect(told()).toEqual([`the fixture told its own failure (${how})`])
      expect(fs.readdirSync(runtime)).toEqual([`told-${'c'.repeat(32)}`])
      hook.received.length = 0
    }
    // Told nothing itself: runMain tells it, with the state the script declares.
    const runtime = tempDir('ttg-run-')
    expect((await fixture('untold', runtime)).code).toBe(5)
    expect(told()).toEqual([`told untold failed on ${os.hostname()} (exit 5): the fixture failed. Fixture state. Look further: tail -n 50 ${env.LOG_FILE}`])
    expect(fs.readdirSync(runtime)).toHaveLength(1)
  })

  // Last: it stops the cluster.
  it('a scheduled backup with PostgreSQL stopped (exit 1): no new backup, the earlier ones untouched', async () => {
    cluster.stop()
    const result = await runScript('backup', ['scheduled'], env)
    expect(result.code).toBe(1)
    expect(told()).toHaveLength(1)
    expect(told()[0]).toMatch(new RegExp(`^backup scheduled failed on ${os.hostname()} \\(exit 1\\): .+ No new backup was made; the earlier backups are untouched \\(backup.sh --list\\). Look further: tail -n 50 .+deployment.log$`))
  })
})
