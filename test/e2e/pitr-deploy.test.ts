import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseEnvFile } from '../../lib/core/env-file.ts'
import { readLog } from '../support/scripts.ts'
import { stopAfterFirstFailure } from '../support/sequence.ts'
import { bedEnv, createStack, exec, type Stack } from '../support/stack.ts'

// Point-in-time recovery turned on the way .env.production.template says: PITR_ENABLED=true in
// the file, then a deploy. The deploy prepares repo1 as setup-droplet does (under BACKUP_DIR, the
// server's uid, 0700), bind-mounted and never a Docker volume, and creates the stanza; the next
// `backup --physical` works and publishes its metric.
let stack: Stack
let env: Record<string, string>
let envFile: string
let repoDir: string

beforeAll(async () => {
  stack = createStack('v2')
  const appDir = path.join(stack.dir, 'app')
  const clone = await exec(['git', 'clone', '--quiet', bedEnv().APP_REPO ?? '', appDir])
  if (clone.code !== 0) throw new Error(clone.stderr)
  envFile = path.join(stack.dir, '.env.production')
  repoDir = path.join(stack.env.BACKUP_DIR ?? '', 'pgbackrest')
  env = { APP_DIR: appDir, HEALTH_CHECK_TIMEOUT: '90', METRICS_DIR: path.join(stack.dir, 'metrics') }
  fs.mkdirSync(env.METRICS_DIR ?? '')
}, 120_000)

afterAll(async () => {
  await stack?.down()
})

async function postgresContainer(): Promise<string> {
  const r = await exec(['docker', 'ps', '--quiet', '--filter', `label=com.docker.compose.project=${stack.project}`, '--filter', 'label=com.docker.compose.service=postgres'])
  return r.stdout.trim()
}

async function repoMount(): Promise<{ Type: string; Source: string }> {
  const r = await exec(['docker', 'inspect', '--format', '{{json .Mounts}}', await postgresContainer()])
  const mounts = JSON.parse(r.stdout) as { Type: string; Source: string; Destination: string }[]
  const repo = mounts.find((m) => m.Destination === '/var/lib/pgbackrest')
  if (!repo) throw new Error(`no mount at /var/lib/pgbackrest: ${r.stdout}`)
  return repo
}

describe('PITR turned on by editing .env.production and deploying', () => {
  stopAfterFirstFailure()

  it('1. with PITR off, repo1 is a bind mount of $BACKUP_DIR/pgbackrest, and the project has no pgBackRest volume', async () => {
    const r = await stack.script('deploy', ['v1.0.0', '--yes'], env)
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(await repoMount()).toMatchObject({ Type: 'bind', Source: repoDir })
    const volumes = await exec(['docker', 'volume', 'ls', '--quiet', '--filter', `label=com.docker.compose.project=${stack.project}`])
    expect(volumes.stdout).not.toContain('pgbackrest')
  })

  it('2. PITR_ENABLED=true and a deploy: repo1 owned by the server\'s uid, 0700, its path in the file, the stanza created', async () => {
    fs.appendFileSync(envFile, 'PITR_ENABLED=true\nPITR_ARCHIVE_TIMEOUT=15\n')
    const r = await stack.script('deploy', ['v1.1.0', '--yes'], env)
    expect(r.code, r.stdout + r.stderr).toBe(0)
    const image = `${bedEnv().POSTGRES_IMAGE}-pgbackrest`
    const uid = Number((await exec(['docker', 'run', '--rm', '--entrypoint', 'id', image, '-u', 'postgres'])).stdout.trim())
    const stat = fs.statSync(repoDir)
    expect(stat.uid).toBe(uid)
    expect(stat.mode & 0o777).toBe(0o700)
    expect(parseEnvFile(fs.readFileSync(envFile, 'utf8')).PITR_REPO_DIR).toBe(repoDir)
    expect(await repoMount()).toMatchObject({ Type: 'bind', Source: repoDir })
    // pgBackRest's own files of the stanza
    expect(fs.existsSync(path.join(repoDir, 'backup', 'main', 'backup.info'))).toBe(true)
    expect(fs.existsSync(path.join(repoDir, 'archive', 'main', 'archive.info'))).toBe(true)
    const log = readLog(stack.env.LOG_FILE ?? '').join('\n')
    expect(log).toContain(`pgBackRest repo1: ${repoDir} (owned by ${uid}:`)
    expect(log).toMatch(/WARN: Point-in-time recovery: repo1 holds no base backup yet/)
  })

  it('3. backup --physical works and publishes its metric without a warning', async () => {
    const r = await stack.script('backup', ['--physical'], env)
    expect(r.code, r.stdout + r.stderr).toBe(0)
    expect(r.stdout + r.stderr).not.toContain('Could not publish metrics')
    const metric = fs.readFileSync(path.join(env.METRICS_DIR ?? '', 'toogoodtogo_physical_backup_repo1.prom'), 'utf8')
    expect(metric).toMatch(/^toogoodtogo_physical_backup_last_success_timestamp_seconds\{repo="repo1"\} \d+$/m)
    const list = await stack.script('backup', ['--list'], env)
    expect(list.stdout).toMatch(/full, repo1/)
  })
})
