import { execFileSync, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import pg from 'pg'

// A throwaway PostgreSQL cluster per test file: initdb in a temp directory on a free port, password
// auth over TCP like a managed database. As root it runs as the `postgres` system user (initdb
// refuses root); as anyone else it runs as that user.
export interface Cluster {
  port: number
  dir: string
  adminUrl(database?: string): string
  query<T = Record<string, unknown>>(sql: string, database?: string, user?: string): Promise<T[]>
  stop(): void
}

export const ADMIN_PASSWORD = 'Adm1n-Secret-pw'

export function postgresBinDir(): string {
  const root = '/usr/lib/postgresql'
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb'))) : []
  const newest = versions.sort((a, b) => Number(b) - Number(a))[0]
  if (!newest) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql: run `apt-get install postgresql` (or bash .ci/run)')
  return path.join(root, newest, 'bin')
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

function asClusterUser(argv: string[]): string[] {
  return process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--', ...argv] : argv
}

export async function startCluster(): Promise<Cluster> {
  const bin = postgresBinDir()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-pg-'))
  fs.chmodSync(dir, 0o755)
  if (process.getuid?.() === 0) execFileSync('chown', ['postgres:postgres', dir])
  const pwfile = path.join(dir, 'pw')
  fs.writeFileSync(pwfile, ADMIN_PASSWORD, { mode: 0o644 })
  const data = path.join(dir, 'data')
  run(asClusterUser([path.join(bin, 'initdb'), '-D', data, '-U', 'admin', '--pwfile', pwfile, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--locale=C']))
  const port = await freePort()
  // fsync off: these clusters are thrown away, and the tests should not wait on the disk.
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=50`
  run(asClusterUser([path.join(bin, 'pg_ctl'), '-D', data, '-o', options, '-l', path.join(dir, 'server.log'), '-w', 'start']))
  const adminUrl = (database = 'postgres') => `postgresql://admin:${ADMIN_PASSWORD}@127.0.0.1:${port}/${database}`
  return {
    port,
    dir,
    adminUrl,
    async query<T>(sql: string, database = 'postgres', user?: string): Promise<T[]> {
      const client = new pg.Client({ connectionString: user ? adminUrl(database).replace(`admin:${ADMIN_PASSWORD}`, user) : adminUrl(database) })
      await client.connect()
      try {
        return (await client.query(sql)).rows as T[]
      } finally {
        await client.end()
      }
    },
    stop() {
      spawnSync(asClusterUser([path.join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', 'stop'])[0]!, asClusterUser([path.join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', 'stop']).slice(1), { stdio: 'ignore' })
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

function run(argv: string[]): void {
  const result = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`${argv.join(' ')} failed: ${result.stderr || result.stdout}`)
}
