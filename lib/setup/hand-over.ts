import fs from 'node:fs'
import { writeFileAtomic } from '../core/atomic-file.ts'
import { OpsError } from '../core/errors.ts'
import { makeDirNoFollow, setOwnerAndMode, type Ids } from '../core/no-follow.ts'
import { $read, isDryRun } from '../core/shell.ts'

// setup-droplet runs as root and hands files and directories to the deploy user (or to a
// container's uid) in directories that user owns: not with chown/chmod/install -d, which follow a
// link planted there, but through lib/core/no-follow.ts. A dry run prints what would change, in
// the words of the commands an operator knows.

/** `owner` is a user name (its primary group) or a numeric id (used for both, as `chown 65534:65534`). */
export async function ownerIds(owner: string): Promise<Ids> {
  if (/^\d+$/.test(owner)) return { uid: Number(owner), gid: Number(owner) }
  const [, , uid, gid] = (await $read({ timeoutMs: 10_000 })`getent passwd ${owner}`).stdout.trim().split(':')
  if (!uid || !gid || !/^\d+$/.test(uid) || !/^\d+$/.test(gid)) throw new OpsError('config', `User ${owner} has no passwd entry (getent passwd ${owner})`)
  return { uid: Number(uid), gid: Number(gid) }
}

/** chown owner:owner and chmod mode, never through a link. */
export async function handOver(owner: string, file: string, mode: number): Promise<void> {
  if (isDryRun()) {
    process.stdout.write(`[dry-run] chown ${owner}:${owner} ${file}; chmod ${octal(mode)} ${file}\n`)
    return
  }
  setOwnerAndMode(file, await ownerIds(owner), mode)
}

/** install -d -m mode -o owner -g owner, refusing a link the owner (or anyone but root) planted. */
export async function ensureDir(dir: string, mode: number, owner: string): Promise<void> {
  if (isDryRun()) {
    process.stdout.write(`[dry-run] install -d -m ${octal(mode)} -o ${owner} -g ${owner} ${dir}\n`)
    return
  }
  makeDirNoFollow(dir, mode, await ownerIds(owner))
}

/** install -m mode -o owner -g owner from to: the copy has its owner and mode before it has its name. */
export async function installFileAs(from: string, to: string, mode: number, owner: string): Promise<void> {
  if (isDryRun()) {
    process.stdout.write(`[dry-run] install -m ${octal(mode)} -o ${owner} -g ${owner} ${from} ${to}\n`)
    return
  }
  writeFileAtomic(to, fs.readFileSync(from, 'utf8'), mode, { owner: await ownerIds(owner) })
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0')
}
