import fs from 'node:fs'
import { OpsError } from './errors.ts'
import { formatMb } from './format.ts'

export function freeMb(dir: string): number {
  const stats = fs.statfsSync(dir)
  return Math.floor((stats.bavail * stats.bsize) / (1024 * 1024))
}

/** Returns the free space in MB, or throws the contract's "Insufficient disk space" error. */
export function requireFreeDisk(dir: string, requiredMb: number): number {
  const available = freeMb(dir)
  if (available < requiredMb) {
    throw new OpsError('disk_space', `Insufficient disk space: ${formatMb(available)} available, ${formatMb(requiredMb)} required`)
  }
  return available
}

export function isDiskFull(error: unknown): boolean {
  const e = error as NodeJS.ErrnoException
  return e?.code === 'ENOSPC' || /no space left on device|ENOSPC/i.test(String(e?.message ?? ''))
}
