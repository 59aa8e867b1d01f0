import fs from 'node:fs'
import path from 'node:path'
import { OpsError } from './errors.ts'

// Root writes into directories the deploy user owns (DEPLOY_DIR, BACKUP_DIR, the log directory,
// its home): a name there is the deploy user's to replace with a link to /etc/shadow between two
// of root's steps. Every such write goes through here: the last component is opened with
// O_NOFOLLOW (or created with O_EXCL), and owner and mode are changed through the open file,
// never by name, so a planted link is refused, naming it, and its target is never touched.
// A link root itself made (a data volume mounted elsewhere) is still followed on the way there.

export interface Ids {
  uid: number
  gid: number
}

const { O_NOFOLLOW, O_WRONLY, O_RDONLY, O_APPEND, O_CREAT, O_EXCL, O_NONBLOCK, O_DIRECTORY } = fs.constants

/** Append, creating it: the flags for log and audit lines. */
export const APPEND_FLAGS = O_WRONLY | O_APPEND | O_CREAT
/** A new file only: fails on anything already there, a link included. */
export const CREATE_NEW_FLAGS = O_WRONLY | O_CREAT | O_EXCL

export function linkRefused(file: string, why = 'it is a symbolic link'): OpsError {
  let target = ''
  try {
    target = ` to ${fs.readlinkSync(file)}`
  } catch {
    // not a link (a hard link or another file type), or gone already: the reason says which
  }
  return new OpsError('refused', `Refusing to write ${file}: ${why}${target}, which a user other than root may have planted; its target was not touched. Remove it (rm ${file}) and run again`)
}

/** openSync with O_NOFOLLOW: a link at `file` is refused by name (ELOOP), never opened. */
export function openNoFollow(file: string, flags: number, mode?: number): number {
  try {
    return fs.openSync(file, flags | O_NOFOLLOW, mode)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') throw linkRefused(file)
    throw error
  }
}

/**
 * Appends to `file` (created with `mode`), never through a link; as root, never to a file with
 * a second name either (a hard link to a root-only file, where protected_hardlinks is off).
 */
export function appendNoFollow(file: string, data: string, mode: number): void {
  const fd = openNoFollow(file, APPEND_FLAGS, mode)
  try {
    if (process.getuid?.() === 0 && fs.fstatSync(fd).nlink > 1) throw linkRefused(file, 'it has more than one name (a hard link)')
    fs.writeSync(fd, data)
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Every directory on the way to `file` that is a symbolic link must be one only root could have
 * made: the link owned by root, in a directory owned by root. Root's own links (a volume mounted
 * elsewhere) are followed; one the deploy user planted is refused.
 */
export function refuseUntrustedLinks(file: string): void {
  const parts = path.resolve(file).split(path.sep).filter(Boolean)
  let at: string = path.sep
  for (const part of parts.slice(0, -1)) {
    const parent = at
    at = path.join(at, part)
    const stat = lstatOrNull(at)
    if (!stat) return
    if (stat.isSymbolicLink() && (stat.uid !== 0 || fs.statSync(parent).uid !== 0)) throw linkRefused(at, 'a directory on the way is a symbolic link that is not root\'s')
  }
}

/**
 * Sets the owner (null: unchanged) and mode of `file` through a descriptor opened without
 * following a link; a regular file with a second name (a hard link) is refused when the owner
 * changes, since that would hand over whatever it also names.
 */
export function setOwnerAndMode(file: string, owner: Ids | null, mode: number): void {
  // O_NONBLOCK: a FIFO planted in the file's place must not hang the open.
  const fd = openNoFollow(file, O_RDONLY | O_NONBLOCK)
  try {
    const stat = fs.fstatSync(fd)
    if (owner && stat.isFile() && stat.nlink > 1) throw linkRefused(file, 'it has more than one name (a hard link)')
    if (owner && (stat.uid !== owner.uid || stat.gid !== owner.gid)) fs.fchownSync(fd, owner.uid, owner.gid)
    // after the chown, which clears set-id bits
    fs.fchmodSync(fd, mode)
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * Creates `dir` (missing parents too, root's, 755, as `install -d` does) or takes the one there,
 * and gives it `owner` and `mode`: a link in its place is refused, unless root made it.
 */
export function makeDirNoFollow(dir: string, mode: number, owner: Ids | null): void {
  refuseUntrustedLinks(dir)
  const missing: string[] = []
  for (let at = path.resolve(dir); !lstatOrNull(at); at = path.dirname(at)) missing.unshift(at)
  for (const at of missing) {
    try {
      fs.mkdirSync(at, { mode: at === path.resolve(dir) ? 0o700 : 0o755 })
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
  }
  // mkdir(2) never follows a link in its last component; the open below refuses one that
  // appeared since, so the owner and mode land on this very directory or nowhere.
  const stat = fs.lstatSync(dir)
  const trusted = stat.isSymbolicLink() && stat.uid === 0 && fs.statSync(path.dirname(path.resolve(dir))).uid === 0
  // (O_NOFOLLOW with O_DIRECTORY says ENOTDIR for a link: named here instead)
  if (stat.isSymbolicLink() && !trusted) throw linkRefused(dir)
  let fd: number
  try {
    fd = fs.openSync(dir, O_RDONLY | O_DIRECTORY | (trusted ? 0 : O_NOFOLLOW))
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ELOOP') throw linkRefused(dir)
    if (code === 'ENOTDIR') throw new OpsError('config', `${dir} exists and is not a directory: move it away and run again`)
    throw error
  }
  try {
    const current = fs.fstatSync(fd)
    if (owner && (current.uid !== owner.uid || current.gid !== owner.gid)) fs.fchownSync(fd, owner.uid, owner.gid)
    fs.fchmodSync(fd, mode)
  } finally {
    fs.closeSync(fd)
  }
}

export function lstatOrNull(file: string): fs.Stats | null {
  try {
    return fs.lstatSync(file)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw error
  }
}
