import { dayjs } from './time.ts'

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

/** `20251228_030010`, UTC: the contract's backup file stamp (of now, without an argument). */
export function fileStamp(date?: dayjs.ConfigType): string {
  return dayjs.utc(date).format('YYYYMMDD_HHmmss')
}

/** `2025-12-28T03:00:10Z`: the contract's timestamps, to the second (now, without an argument). */
export function isoSeconds(date?: dayjs.ConfigType): string {
  return dayjs.utc(date).format('YYYY-MM-DDTHH:mm:ss[Z]')
}

/** "45s", "12m", "3h 12m", "2d 4h": ages at a glance. */
export function formatAge(seconds: number): string {
  const age = dayjs.duration(Math.max(0, Math.floor(seconds)), 'seconds')
  if (age.asMinutes() < 1) return `${age.seconds()}s`
  if (age.asHours() < 1) return `${age.minutes()}m`
  if (age.asDays() < 1) return `${age.hours()}h ${age.minutes()}m`
  return `${Math.floor(age.asDays())}d ${age.hours()}h`
}
