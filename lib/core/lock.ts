import fs from 'node:fs'
import os from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { z } from 'zod'
import { OpsError } from './errors.ts'
import { log } from './log.ts'
import path from 'node:path'
import type { Config } from './config.ts'
import { onInterrupt } from './interrupts.ts'
import { isDryRun } from './runner.ts'

// A lock file created with O_EXCL holding who took it. A holder whose process is gone (same host),
// or older than `staleAfterMs`, is taken over with a warning, so a kill -9 never wedges the host.
const holderSchema = z.object({
  pid: z.number().int(),
  host: z.string(),
  command: z.string(),
  started_at: z.string(),
})
export type LockHolder = z.infer<typeof holderSchema>

export interface LockOptions {
  command: string
  /** how long to wait for a live holder before giving up; 0 = fail at once */
  waitMs: number
  staleAfterMs: number
}

export interface Lock {
  release(): void
}

export async function acquireLock(file: string, options: LockOptions): Promise<Lock> {
  const deadline = Date.now() + options.waitMs
  const me: LockHolder = { pid: process.pid, host: os.hostname(), command: options.command, started_at: new Date().toISOString() }
  for (let announced = false; ; ) {
    if (createComplete(file, me)) return { release: () => releaseIfMine(file, me) }
    const holder = readHolder(file)
    if (!holder && !fs.existsSync(file)) continue // released between our link and our read
    const staleReason = holder ? whyStale(holder, options.staleAfterMs) : unreadableAndOld(file, options.staleAfterMs)
    if (staleReason) {
      log.warn(`Taking over stale lock ${file} (${staleReason}${holder ? `: pid ${holder.pid} on ${holder.host}, "${holder.command}" since ${holder.started_at}` : ''})`)
      fs.rmSync(file, { force: true })
      continue
    }
    const who = holder ? `pid ${holder.pid} on ${holder.host}, "${holder.command}" since ${holder.started_at}` : 'a holder whose lock file cannot be read yet'
    if (Date.now() >= deadline) throw new OpsError('locked', `Another operation holds ${file}: ${who}`)
    if (!announced) log.info(`Waiting for ${holder ? `pid ${holder.pid} ("${holder.command}")` : 'the holder'} to release ${file}`)
    announced = true
    await sleep(500)
  }
}

/**
 * Writes the holder to a private temp file, then link(2)s it into place: the lock appears whole
 * or not at all, so nobody ever reads a lock being written and mistakes it for an abandoned one.
 */
function createComplete(file: string, me: LockHolder): boolean {
  const temp = `${file}.${process.pid}.${Date.now()}.tmp`
  fs.writeFileSync(temp, JSON.stringify(me) + '\n', { flag: 'wx', mode: 0o600 })
  try {
    fs.linkSync(temp, file)
    return true
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    return false
  } finally {
    fs.rmSync(temp, { force: true })
  }
}

function readHolder(file: string): LockHolder | null {
  try {
    return holderSchema.parse(JSON.parse(fs.readFileSync(file, 'utf8')))
  } catch {
    return null
  }
}

/** An unreadable lock (another version's format, a disk error) is held until it is old. */
function unreadableAndOld(file: string, staleAfterMs: number): string | null {
  try {
    const age = Date.now() - fs.statSync(file).mtimeMs
    return age > staleAfterMs ? `unreadable and older than ${Math.round(staleAfterMs / 60000)} minutes` : null
  } catch {
    return null
  }
}

function whyStale(holder: LockHolder, staleAfterMs: number): string | null {
  if (holder.host === os.hostname() && !processAlive(holder.pid)) return 'its process is gone'
  const age = Date.now() - Date.parse(holder.started_at)
  if (age > staleAfterMs) return `older than ${Math.round(staleAfterMs / 60000)} minutes`
  return null
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
  return !isZombie(pid)
}

/** A killed process whose parent died too stays a zombie where nothing reaps it (a container's pid 1). */
function isZombie(pid: number): boolean {
  try {
    // The state follows the command name, which is in parentheses and may itself hold spaces.
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')
  } catch {
    return false
  }
}

function releaseIfMine(file: string, me: LockHolder): void {
  const holder = readHolder(file)
  if (holder && holder.pid === me.pid && holder.started_at === me.started_at) fs.rmSync(file, { force: true })
}

// One deploy or rollback at a time on this host. A holder whose process is gone, or older than
// 30 minutes, is taken over with a warning; Ctrl-C and SIGTERM release it like success and failure.
export async function takeDeployLock(cfg: Config, command: string): Promise<Lock> {
  if (isDryRun()) return { release: () => undefined }
  const lock = await acquireLock(path.join(cfg.DEPLOY_DIR, '.deploy.lock'), { command, waitMs: 0, staleAfterMs: 30 * 60_000 })
  const forget = onInterrupt(() => lock.release())
  return {
    release() {
      forget()
      lock.release()
    },
  }
}
