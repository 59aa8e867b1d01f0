import { spawnSync } from 'node:child_process'
import fs from 'node:fs'

// The integration tier needs PostgreSQL's server binaries, its clients, pigz, gzip and git on the
// host. As root on Debian it installs what is missing; otherwise it stops and names it.
const NEEDS: [check: () => boolean, pkg: string][] = [
  [() => fs.existsSync('/usr/lib/postgresql') && fs.readdirSync('/usr/lib/postgresql').some((v) => fs.existsSync(`/usr/lib/postgresql/${v}/bin/initdb`)), 'postgresql'],
  [() => onPath('pg_dump') && onPath('psql'), 'postgresql-client'],
  [() => onPath('pigz'), 'pigz'],
  [() => onPath('git'), 'git'],
]

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
}

export default function setup(): void {
  const missing = NEEDS.filter(([check]) => !check()).map(([, pkg]) => pkg)
  if (missing.length === 0) return
  if (process.getuid?.() !== 0 || !fs.existsSync('/etc/debian_version')) {
    throw new Error(`integration tests need: ${missing.join(' ')} (apt-get install ${missing.join(' ')}, or run bash .ci/run as root)`)
  }
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', ...missing]]) {
    const result = spawnSync('apt-get', args, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
    if (result.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed`)
  }
}
