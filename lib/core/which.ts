import fs from 'node:fs'

// A PATH lookup is zx's `which` (gzip.ts picks pigz by it); this is the check for a file named by a setting.

/** A regular file (not a directory) this process may use as `mode` says (fs.constants.R_OK, X_OK). */
export function isFileWithAccess(file: string, mode: number): boolean {
  try {
    fs.accessSync(file, mode)
    return fs.statSync(file).isFile()
  } catch {
    return false
  }
}
