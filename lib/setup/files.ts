import fs from 'node:fs'
import { writeFileAtomic } from '../core/atomic-file.ts'
import { log } from '../core/log.ts'
import { setOwnerAndMode } from '../core/no-follow.ts'
import { isDryRun } from '../core/shell.ts'

/** Files are written whole (temp, fsync, rename); under --dry-run only announced, never their content. */
export function writeFile(file: string, content: string, mode: number): void {
  if (isDryRun()) {
    process.stdout.write(`[dry-run] write ${file} (mode ${mode.toString(8)})\n`)
    return
  }
  writeFileAtomic(file, content, mode)
  setOwnerAndMode(file, null, mode)
}

export function writeFileIfChanged(file: string, content: string, mode: number): void {
  const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null
  if (current === content) return
  writeFile(file, content, mode)
  if (!isDryRun()) log.info(`Wrote ${file}`)
}
