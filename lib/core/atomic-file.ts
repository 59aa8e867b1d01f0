import crypto from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { CREATE_NEW_FLAGS, linkRefused, lstatOrNull, openNoFollow, refuseUntrustedLinks, type Ids } from './no-follow.ts'

// State files (backup index, deployment state, .env.production) are replaced, never edited in
// place: a crash or a full disk leaves either the old file or the new one, never half of one.
// A replaced file keeps its owner, group and mode: a file the deploy user owns stays readable by
// the units that run as that user, whoever rewrote it. `owner` (root only) gives a new or replaced
// file that owner and exactly `mode`, before it takes the name.
// The temp name is random and created with O_EXCL, and a link at `file` is refused, not replaced:
// root writes these into directories the deploy user owns (lib/core/no-follow.ts).
export function writeFileAtomic(file: string, content: string, mode = 0o600, options: { owner?: Ids } = {}): void {
  const asRoot = process.getuid?.() === 0
  if (asRoot) refuseUntrustedLinks(file)
  const previous = lstatOrNull(file)
  if (previous?.isSymbolicLink()) throw linkRefused(file)
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${crypto.randomBytes(8).toString('hex')}.tmp`)
  const fd = openNoFollow(temp, CREATE_NEW_FLAGS, previous ? previous.mode & 0o7777 : mode)
  try {
    fs.writeFileSync(fd, content)
    const owner = options.owner ?? (previous && asRoot ? { uid: previous.uid, gid: previous.gid } : null)
    if (owner && asRoot) fs.fchownSync(fd, owner.uid, owner.gid)
    // after the chown, which clears set-id bits, and past the umask the open applied
    if (options.owner) fs.fchmodSync(fd, mode)
    else if (previous) fs.fchmodSync(fd, previous.mode & 0o7777)
    fs.fsyncSync(fd)
  } catch (error) {
    fs.closeSync(fd)
    fs.rmSync(temp, { force: true })
    throw error
  }
  fs.closeSync(fd)
  fs.renameSync(temp, file)
  fsyncDir(path.dirname(file))
}

export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r')
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

export function fsyncFile(file: string): void {
  const fd = fs.openSync(file, 'r+')
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}
