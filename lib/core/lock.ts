import { createHash, randomUUID } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import { sleep } from 'zx'
import { z } from 'zod'
import { OpsError } from './errors.ts'
import { log } from './log.ts'
import path from 'node:path'
import type { Config } from './config.ts'
import { onInterrupt } from './interrupts.ts'
import { isDryRun } from './shell.ts'
import { dayjs } from './time.ts'

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

// A takeover claim is held for a few system calls; one whose process is gone, or this old, was
// abandoned (a kill -9 at that very moment) and is itself taken over.
const CLAIM_ABANDONED_MS = 60_000

export async function acquireLock(file: string, options: LockOptions): Promise<Lock> {
  const deadline = Date.now() + options.waitMs
  // The token makes every holder's text unique, so "the lock still holds what I judged stale" can
  // be decided by comparing text: no later holder ever writes the same bytes.
  const mine = holderText(options.command)
  for (let announced = false; ; ) {
    if (createComplete(file, mine)) return { release: () => void removeUnderClaim(file, mine) }
    const seen = readText(file)
    if (seen === null) continue // released between our link and our read
    const holder = parseHolder(seen)
    const staleReason = holder ? whyStale(holder, options.staleAfterMs) : unreadableAndOld(file, options.staleAfterMs)
    if (staleReason) {
      if (await removeStale(file, seen)) log.warn(`Taking over stale lock ${file} (${staleReason}${holder ? `: ${describe(holder)}` : ''})`)
      continue
    }
    const who = holder ? describe(holder) : 'a holder whose lock file cannot be read yet'
    if (Date.now() >= deadline) throw new OpsError('locked', `Another operation holds ${file}: ${who}`)
    if (!announced) log.info(`Waiting for ${holder ? `pid ${holder.pid} ("${holder.command}")` : 'the holder'} to release ${file}`)
    announced = true
    await sleep(500)
  }
}

function holderText(command: string): string {
  const holder: LockHolder & { token: string } = { pid: process.pid, host: os.hostname(), command, started_at: dayjs.utc().toISOString(), token: randomUUID() }
  return JSON.stringify(holder) + '\n'
}

function describe(holder: LockHolder): string {
  return `pid ${holder.pid} on ${holder.host}, "${holder.command}" since ${holder.started_at}`
}

/**
 * Removes `file` if it still holds `seen` (a stale holder), and says whether it did. Many processes
 * may judge the same holder stale at once; removing by name, the second would remove the lock the
 * first had just taken, and both would hold it. So only the process that claims this holder's
 * takeover file (O_EXCL) re-reads and removes; the others wait for the claim to go and look again.
 */
async function removeStale(file: string, seen: string): Promise<boolean> {
  const outcome = removeUnderClaim(file, seen)
  if (outcome !== 'claimed elsewhere') return outcome === 'removed'
  const claim = claimFile(file, seen)
  const claimant = readText(claim)
  if (claimant !== null) {
    const holder = parseHolder(claimant)
    const abandoned = holder ? whyStale(holder, CLAIM_ABANDONED_MS) : unreadableAndOld(claim, CLAIM_ABANDONED_MS)
    if (abandoned) await removeStale(claim, claimant)
    else await sleep(10)
  }
  return false
}

/**
 * Under the claim on `seen`, nobody else can remove `file` while it holds `seen`: the holder's own
 * release claims it too. The claim is then removed: it names content that is gone for good (or was
 * never there any more), so a latecomer who claims it again finds other text and removes nothing.
 */
function removeUnderClaim(file: string, seen: string): 'removed' | 'changed' | 'claimed elsewhere' {
  const claim = claimFile(file, seen)
  if (!createComplete(claim, holderText(`takeover of ${path.basename(file)}`))) return 'claimed elsewhere'
  try {
    if (readText(file) !== seen) return 'changed'
    fs.rmSync(file, { force: true })
    return 'removed'
  } finally {
    fs.rmSync(claim, { force: true })
  }
}

function claimFile(file: string, seen: string): string {
  return `${file}.takeover-${createHash('sha256').update(seen).digest('hex').slice(0, 16)}`
}

/**
 * Writes the text to a private temp file, then link(2)s it into place: the file appears whole
 * or not at all, so nobody ever reads a lock being written and mistakes it for an abandoned one.
 */
function createComplete(file: string, text: string): boolean {
  const temp = `${file}.${process.pid}.${randomUUID().slice(0, 8)}.tmp`
  fs.writeFileSync(temp, text, { flag: 'wx', mode: 0o600 })
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

/** The lock's text; null when there is no lock file, '' when it cannot be read (held until old). */
function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8')
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ENOENT' ? null : ''
  }
}

function parseHolder(text: string): LockHolder | null {
  try {
    return holderSchema.parse(JSON.parse(text))
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
  const age = dayjs().diff(holder.started_at)
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

// One deploy, rollback or restore at a time on this host. A holder whose process is gone, or
// older than 30 minutes, is taken over with a warning; Ctrl-C and SIGTERM release it like success
// and failure.
export async function takeDeployLock(cfg: Config, command: string): Promise<Lock> {
  if (isDryRun()) return { release: () => undefined }
  return releasedOnInterrupt(await acquireLock(path.join(cfg.DEPLOY_DIR, '.deploy.lock'), { command, waitMs: 0, staleAfterMs: 30 * 60_000 }))
}

/** The lock, released by Ctrl-C and SIGTERM too (not only by the code that took it). */
export function releasedOnInterrupt(lock: Lock): Lock {
  const forget = onInterrupt(() => lock.release())
  return {
    release() {
      forget()
      lock.release()
    },
  }
}
