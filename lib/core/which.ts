import fs from 'node:fs'
import path from 'node:path'

/** The first executable file called `name` on PATH, like `command -v`; null when there is none. */
export function findOnPath(name: string, pathVar = process.env.PATH ?? ''): string | null {
  for (const dir of pathVar.split(path.delimiter).filter(Boolean)) {
    const file = path.join(dir, name)
    if (isFileWithAccess(file, fs.constants.X_OK)) return file
  }
  return null
}

/** A regular file (not a directory) this process may use as `mode` says (fs.constants.R_OK, X_OK). */
export function isFileWithAccess(file: string, mode: number): boolean {
  try {
    fs.accessSync(file, mode)
    return fs.statSync(file).isFile()
  } catch {
    return false
  }
}
