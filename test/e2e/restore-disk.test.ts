import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, expect, it } from 'vitest'
import { readLog } from '../support/scripts.ts'
import { DB, bedEnv, createStack, exec, type Stack } from '../support/stack.ts'

// The full data disk, made small on purpose: postgres alone (compose mode) on a 256 MB
// tmpfs volume. A restore whose scratch copy would not fit is refused before it writes a byte,
// with the figures measured inside the container; one that fits goes ahead.
let stack: Stack
let composeFile: string
let env: Record<string, string>

beforeAll(async () => {
  stack = createStack('v2')
  composeFile = path.join(stack.dir, 'docker-compose.small-disk.yml')
  fs.writeFileSync(composeFile, [
    'services:',
    '  postgres:',
    `    image: ${bedEnv().POSTGRES_IMAGE}`,
    // WAL kept between 32 and 64 MB, so what is free after the rows below is known within that.
    '    command: postgres -c min_wal_size=32MB -c max_wal_size=64MB',
    '    environment:',
    `      POSTGRES_DB: ${DB.name}`,
    `      POSTGRES_USER: ${DB.user}`,
    `      POSTGRES_PASSWORD: ${DB.password}`,
    '    volumes:',
    '      - postgres_data:/var/lib/postgresql/data',
    'volumes:',
    '  postgres_data:',
    '    driver_opts: { type: tmpfs, device: tmpfs, o: "size=256m" }',
    '',
  ].join('\n'))
  env = { ...stack.env, DOCKER_COMPOSE_FILE: composeFile, APP_SERVICES: '' }
  expect((await compose(['up', '-d', 'postgres'])).code).toBe(0)
  for (let i = 0; ; i++) {
    if ((await compose(['exec', '-T', 'postgres', 'pg_isready', '-U', DB.user, '-d', DB.name])).code === 0 && (await psql('SELECT 1')) === '1') break
    if (i > 120) throw new Error('postgres did not start')
    await new Promise((resolve) => setTimeout(resolve, 1000))
  }
})
afterAll(async () => {
  await compose(['down', '--volumes', '--timeout', '5'])
  fs.rmSync(stack.dir, { recursive: true, force: true })
})

it('a scratch copy that would not fit on the postgres volume is refused (exit 1, figures, nothing changed); one that fits is restored', async () => {
  await psql(`CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT g, md5(g::text) FROM generate_series(1, 2000) g`)
  const small = await stack.script('backup', ['--json'], env)
  expect(small.code, small.stderr).toBe(0)
  const fits = await stack.script('restore', [JSON.parse(small.stdout).backup_id, '--yes'], env)
  expect(fits.code, fits.stderr).toBe(0)
  expect(fits.stdout).toMatch(/Database volume: .* available, .* required for the scratch copy/)
  expect(fits.stdout).toContain('Restore successful')

  // About 75 MB of rows (75 as a copy, 71 as dump text): past what is free (at most 256 - 40 for the
  // cluster - 75 - 32 of WAL = 109 MB), and a real copy would fill the volume: the case.
  await psql(`INSERT INTO notes SELECT g, (SELECT string_agg(md5(g::text || i::text), '') FROM generate_series(1, 20) i) FROM generate_series(2001, 112000) g`)
  const big = await stack.script('backup', ['--json'], env)
  expect(big.code, big.stderr).toBe(0)
  const before = { notes: await psql('SELECT count(*) || md5(string_agg(body, \'\' ORDER BY id)) FROM notes'), databases: await psql(`SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database`) }
  const refused = await stack.script('restore', [JSON.parse(big.stdout).backup_id, '--yes'], env)
  expect(refused.code).toBe(1)
  expect(refused.stderr).toMatch(/Insufficient disk space on the postgres volume for the scratch copy: \S+ available, \S+ required \(the live database \S+ \+ the backup uncompressed \S+ \+ MIN_FREE_DISK_MB 1MB\); nothing was changed/)
  expect(refused.stdout).not.toContain('Restore successful')
  expect(readLog(env.LOG_FILE!).some((line) => line.includes('Creating fresh database') && line.includes(JSON.parse(big.stdout).backup_id))).toBe(false)
  expect({ notes: await psql('SELECT count(*) || md5(string_agg(body, \'\' ORDER BY id)) FROM notes'), databases: await psql(`SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database`) }).toEqual(before)
  expect(await psql('SELECT 1')).toBe('1')
})

function compose(args: string[]) {
  return exec(['docker', 'compose', '--project-name', stack.project, '--file', composeFile, ...args])
}

async function psql(sql: string): Promise<string> {
  const r = await compose(['exec', '-T', 'postgres', 'psql', '-U', DB.user, '-d', DB.name, '-Atqc', sql])
  if (r.code !== 0) throw new Error(`psql failed: ${r.stderr}`)
  return r.stdout.trim()
}
