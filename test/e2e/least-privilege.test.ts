import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readEnvFile } from '../../lib/core/env-file.ts'
import { bedEnv, createStack, DB, exec, stackChecksums, type Stack } from '../support/stack.ts'

// Issue 21, item 6, on a real stack: a droplet set up before the bot had a role of its own (its
// DATABASE_URL names the superuser) is moved by the next deploy; the bot's container holds none of
// the toolkit's secrets; the role cannot run programs; a restore leaves the bot able to write.
let stack: Stack
let env: Record<string, string>

const TOOLKIT_SECRETS = {
  OFFSITE_S3_ACCESS_KEY_ID: 'AKIAE2ELEASTPRIVILEGE',
  OFFSITE_S3_SECRET_ACCESS_KEY: 'e2e-bucket-secret-key-value',
  PITR_CIPHER_PASSWORD: 'e2e-cipher-passphrase-0123456789',
  ALERTMANAGER_URL: 'http://127.0.0.1:9093',
}

beforeAll(async () => {
  stack = createStack('v2')
  const envFile = path.join(stack.dir, '.env.production')
  fs.appendFileSync(envFile, [...Object.entries(TOOLKIT_SECRETS).map(([k, v]) => `${k}=${v}`), 'APP_FEATURE_FLAG=on', ''].join('\n'))
  await stack.up('v1.0.0')
  const appDir = path.join(stack.dir, 'app')
  const clone = await exec(['git', 'clone', '--quiet', bedEnv().APP_REPO!, appDir])
  if (clone.code !== 0) throw new Error(clone.stderr)
  env = { APP_DIR: appDir, HEALTH_CHECK_TIMEOUT: '60' }
})
afterAll(async () => stack?.down())

/** Python in the bot's container, connected with the bot's own DATABASE_URL. */
async function asBot(sql: string): Promise<{ code: number; out: string }> {
  const script = `import os, psycopg2\nc = psycopg2.connect(os.environ["DATABASE_URL"])\nc.autocommit = True\ncur = c.cursor()\ncur.execute(${JSON.stringify(sql)})\nprint(cur.fetchone()[0] if cur.description else "ok")`
  const r = await stack.compose(['exec', '-T', 'bot', 'python3', '-c', script])
  return { code: r.code, out: `${r.stdout}${r.stderr}`.trim() }
}

describe('least privilege for the containers', () => {
  it('a deploy moves a bot that connected as the superuser to a role of its own, every row kept', async () => {
    expect((await asBot('SELECT current_user')).out).toBe(DB.user)
    const before = await stackChecksums(stack)
    const deployed = await stack.script('deploy', ['v1.0.0', '--yes', '--force'], env)
    expect(deployed.stderr).toBe('')
    expect(deployed.code).toBe(0)
    expect(deployed.stdout).toContain('moving it to a role of its own, bot')
    const url = readEnvFile(path.join(stack.dir, '.env.production'))?.DATABASE_URL ?? ''
    expect(url).toMatch(/^postgresql:\/\/bot:[A-Za-z0-9]{12,}@postgres:5432\/toogoodtogo$/)
    expect(deployed.stdout + fs.readFileSync(path.join(stack.dir, 'deployment.log'), 'utf8')).not.toContain(new URL(url).password)
    expect((await asBot('SELECT current_user')).out).toBe('bot')
    expect(await stackChecksums(stack)).toEqual(before)
    expect(await stack.psql(`SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> 'bot'`)).toBe('0')
    // a second deploy changes nothing more
    const again = await stack.script('deploy', ['v1.0.0', '--yes', '--force'], env)
    expect(again.code).toBe(0)
    expect(again.stdout).not.toContain('moving it to a role of its own')
    expect(readEnvFile(path.join(stack.dir, '.env.production'))?.DATABASE_URL).toBe(url)
  })

  it("the bot's environment holds the application's variables and none of the toolkit's secrets", async () => {
    const r = await stack.compose(['exec', '-T', 'bot', 'env'])
    expect(r.code).toBe(0)
    const vars = Object.fromEntries(r.stdout.trim().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]))
    for (const [name, value] of Object.entries({ ...TOOLKIT_SECRETS, POSTGRES_PASSWORD: DB.password })) {
      expect(vars[name], name).toBeUndefined()
      expect(r.stdout, name).not.toContain(value)
    }
    expect(vars).toMatchObject({ APP_FEATURE_FLAG: 'on', STRIPE_API_KEY: 'sk_test_e2e_key', REDIS_URL: 'redis://redis:6379/0' })
    expect(vars.DATABASE_URL).toMatch(/^postgresql:\/\/bot:/)
    // PITR is off: postgres gets no bucket settings either
    const pg = await stack.compose(['exec', '-T', 'postgres', 'env'])
    for (const value of Object.values(TOOLKIT_SECRETS).slice(0, 3)) expect(pg.stdout).not.toContain(value)
  })

  it('the bot role is no superuser and cannot run a program through COPY', async () => {
    expect(await stack.psql(`SELECT rolsuper::text || rolcreaterole::text || rolcreatedb::text FROM pg_roles WHERE rolname = 'bot'`)).toBe('falsefalsefalse')
    const copy = await asBot(`COPY (SELECT 1) TO PROGRAM 'touch /tmp/pwned'`)
    expect(copy.code).not.toBe(0)
    expect(copy.out).toMatch(/permission denied|must be superuser|pg_execute_server_program/)
    const from = await asBot(`CREATE TEMP TABLE t (x text); COPY t FROM PROGRAM 'id'`)
    expect(from.code).not.toBe(0)
    expect((await stack.compose(['exec', '-T', 'postgres', 'test', '-e', '/tmp/pwned'])).code).not.toBe(0)
  })

  it('after a restore every table is the bot role\'s again and the bot writes', async () => {
    const backup = await stack.script('backup', ['--json'])
    expect(backup.code).toBe(0)
    const before = await stackChecksums(stack)
    await stack.psql('DELETE FROM offers')
    const restore = await stack.script('restore', [JSON.parse(backup.stdout).backup_id, '--yes'])
    expect(restore.code).toBe(0)
    expect(restore.stdout).toContain('Handing the restored copy to the application\'s role bot')
    expect(await stackChecksums(stack)).toEqual(before)
    expect(await stack.psql(`SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner <> 'bot'`)).toBe('0')
    expect(await stack.psql(`SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '${DB.name}'`)).toBe('bot')
    expect((await asBot(`INSERT INTO users (telegram_id, username) VALUES (990001, 'after-restore') RETURNING id`)).code).toBe(0)
    expect((await stack.script('health-check', ['--json'])).code).toBe(0)
  })
})
