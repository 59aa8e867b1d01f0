import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { withoutSeparator } from './cli.ts'

// Who runs the scripts: the deploy user, who owns DEPLOY_DIR, BACKUP_DIR and the logs, and whom
// the systemd units run as. A script started by root (sudo ./deploy.sh) does its work as that
// user, so every file it creates or replaces stays readable by the nightly backup and the boot
// unit. Root keeps its own identity only where DEPLOY_DIR is root's (a sandbox, a test bed).
export interface DeployUser {
  name: string
  uid: number
  gid: number
  home: string
}

/** The owner of `deployDir` when we are root and it is someone else; null when nothing is to change. */
export function deployUserFor(deployDir: string): DeployUser | null {
  if (process.getuid?.() !== 0) return null
  let owner: number
  try {
    owner = fs.statSync(deployDir).uid
  } catch {
    return null
  }
  if (owner === 0) return null
  const entry = spawnSync('getent', ['passwd', String(owner)], { encoding: 'utf8' })
  const [name, , uid, gid, , home] = entry.stdout.trim().split(':')
  if (entry.status !== 0 || !name || !home) return { name: String(owner), uid: owner, gid: fs.statSync(deployDir).gid, home: '/' }
  return { name, uid: Number(uid), gid: Number(gid), home }
}

/**
 * The argv that runs this very script again as `user`: setpriv changes uid, gid and the
 * supplementary groups (the docker group among them) without a login shell or PAM.
 */
export function reexecArgv(user: DeployUser, execPath: string, execArgv: string[], argv: string[]): string[] {
  return ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', '--', execPath, ...execArgv, ...argv.slice(1)]
}

/** Runs this script again as `user`, forwarding signals; resolves to its exit code. */
export function reexecAs(user: DeployUser): Promise<number> {
  const argv = reexecArgv(user, process.execPath, process.execArgv, process.argv)
  const env = { ...process.env, HOME: user.home, USER: user.name, LOGNAME: user.name, SUDO_USER: process.env.SUDO_USER || 'root' }
  const child = spawn(argv[0] ?? 'setpriv', argv.slice(1), { stdio: 'inherit', env })
  const forward = (signal: NodeJS.Signals) => child.kill(signal)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, forward)
  return new Promise((resolve) => {
    child.on('error', (error) => {
      process.stderr.write(`Cannot switch to user ${user.name} (${error.message}); run it as that user instead: sudo -u ${user.name} ${[process.argv[1] ?? '', ...withoutSeparator(process.argv.slice(2))].join(' ')}\n`)
      resolve(1)
    })
    child.on('close', (code, signal) => resolve(code ?? (signal === 'SIGINT' ? 130 : 143)))
  })
}
