import fs from 'node:fs'
import path from 'node:path'

// State files (backup index, deployment state, .env.production) are replaced, never edited in
// place: a crash or a full disk leaves either the old file or the new one, never half of one.
// A replaced file keeps its owner, group and mode: a file the deploy user owns stays readable by
// the units that run as that user, whoever rewrote it.
export function writeFileAtomic(file: string, content: string, mode = 0o600): void {
  const previous = statOrNull(file)
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`)
  const fd = fs.openSync(temp, 'w', previous ? previous.mode & 0o7777 : mode)
  try {
    fs.writeFileSync(fd, content)
    if (previous) {
      if (process.getuid?.() === 0) fs.fchownSync(fd, previous.uid, previous.gid)
      // after the chown, which clears set-id bits, and past the umask the open applied
      fs.fchmodSync(fd, previous.mode & 0o7777)
    }
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

function statOrNull(file: string): fs.Stats | null {
  try {
    return fs.statSync(file)
  } catch {
    return null
  }
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
