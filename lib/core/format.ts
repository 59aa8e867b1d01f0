// Sizes and counts the way the contract prints them: "25GB", "1.2GB", "245MB", "15,432".
export function formatMb(mb: number): string {
  if (mb >= 1024) return `${trimZero((mb / 1024).toFixed(1))}GB`
  return `${trimZero(mb.toFixed(mb < 10 ? 1 : 0))}MB`
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024 * 1024) return `${Math.ceil(bytes / 1024)}KB`
  return formatMb(bytes / (1024 * 1024))
}

function trimZero(text: string): string {
  return text.replace(/\.0$/, '')
}

export function formatCount(n: number): string {
  return n.toLocaleString('en-US')
}

/** `20251228_030010`, UTC: the contract's backup file stamp. */
export function fileStamp(date: Date): string {
  return date.toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '_')
}

/** `2025-12-28T03:00:10Z`: the contract's timestamps, to the second. */
export function isoSeconds(date: Date): string {
  return date.toISOString().slice(0, 19) + 'Z'
}

/** "45s", "12m", "3h 12m", "2d 4h": ages at a glance. */
export function formatAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m`
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`
}
