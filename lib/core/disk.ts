import fs from 'node:fs'
import { OpsError } from './errors.ts'
import { formatBytes, formatMb } from './format.ts'

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

/** The "Available" column of `df -Pk <dir>`, in bytes. */
export function parseDfAvailable(output: string): number {
  const fields = output.trim().split('\n').at(-1)?.trim().split(/\s+/) ?? []
  const kb = Number(fields[3])
  if (fields.length < 6 || !Number.isSafeInteger(kb)) throw new OpsError('command_failed', `Cannot read the free space from df: ${output.trim()}`)
  return kb * 1024
}

/**
 * The size a gzip file decompresses to, from its trailer (ISIZE: the size modulo 4 GiB, of the last
 * member). A dump is text and never smaller than its gzip, so a trailer below that has wrapped.
 * An estimate only: a forged trailer can make a restore refuse, never let it fill the disk unseen,
 * since the live database's size is counted beside it.
 */
export function uncompressedEstimate(file: string): number {
  const size = fs.statSync(file).size
  if (size < 4) return 0
  const trailer = Buffer.alloc(4)
  const fd = fs.openSync(file, 'r')
  try {
    fs.readSync(fd, trailer, 0, 4, size - 4)
  } finally {
    fs.closeSync(fd)
  }
  let estimate = trailer.readUInt32LE(0)
  while (estimate < size) estimate += 2 ** 32
  return estimate
}

export interface CopyRoom {
  availableBytes: number
  /** what the copy will take, by what it is estimated from ("the live database": bytes) */
  parts: Record<string, number>
  /** MIN_FREE_DISK_MB: what must stay free after the copy */
  marginMb: number
}

/**
 * A restore writes a second copy of the database beside the live one, on the same volume; a volume
 * that fills up takes the server down ("No space left on device"). Throws the contract's disk
 * message when the copy and the margin do not fit; returns the bytes required otherwise.
 */
export function requireRoomForCopy(room: CopyRoom, where: string): number {
  const margin = room.marginMb * 1024 * 1024
  const required = Object.values(room.parts).reduce((sum, bytes) => sum + bytes, margin)
  if (room.availableBytes < required) {
    const parts = Object.entries(room.parts).map(([what, bytes]) => `${what} ${formatBytes(bytes)}`)
    throw new OpsError(
      'disk_space',
      `Insufficient disk space ${where}: ${formatBytes(room.availableBytes)} available, ${formatBytes(required)} required (${[...parts, `MIN_FREE_DISK_MB ${formatMb(room.marginMb)}`].join(' + ')}); nothing was changed`,
    )
  }
  return required
}
