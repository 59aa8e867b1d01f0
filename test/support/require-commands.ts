import { spawnSync } from 'node:child_process'
import fs from 'node:fs'

// Commands a test needs beyond what setup-integration.ts provides, by the Debian package that
// has them. As root on Debian they are installed; otherwise the test stops and names them.
export function requireCommands(needs: Record<string, string>): void {
  const missing = Object.entries(needs)
    .filter(([command]) => spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status !== 0)
    .map(([, pkg]) => pkg)
  if (missing.length === 0) return
  if (process.getuid?.() !== 0 || !fs.existsSync('/etc/debian_version')) {
    throw new Error(`these tests need: ${missing.join(' ')} (apt-get install ${missing.join(' ')})`)
  }
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', ...missing]]) {
    const result = spawnSync('apt-get', args, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
    if (result.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed`)
  }
}
