import fs from 'node:fs'
import path from 'node:path'
import { sleep } from 'zx'
import { z } from 'zod'
import { writeFileAtomic } from '../core/atomic-file.ts'
import { TOOLKIT_DIR, type Config } from '../core/config.ts'
import { processAlive } from '../core/lock.ts'
import { log } from '../core/log.ts'
import { isDryRun } from '../core/shell.ts'
import { startDetached, type Command } from '../core/runner.ts'
import { dayjs } from '../core/time.ts'

// The watch window: a release that passed the health gate can still fall over minutes later. After
// every switch deploy starts `scripts/watch.ts` on its own (it outlives the deploy command), which
// rolls the release back by the automatic rollback's rules if the bot turns unhealthy within
// WATCH_SECONDS. watch.json in DEPLOY_DIR names the one running; a new deploy or rollback ends it
// first, and a watcher that no longer finds itself there stops.
const watchSchema = z.object({
  pid: z.number().int().positive(),
  tag: z.string(),
  previous: z.string(),
  event_id: z.string(),
  started_at: z.string(),
  until: z.string(),
})
export type Watch = z.infer<typeof watchSchema>

export function watchFile(cfg: Config): string {
  return path.join(cfg.DEPLOY_DIR, 'watch.json')
}

/** The watch on record; null when none (or the file is unreadable: a stale watcher then stops by itself). */
export function readWatch(cfg: Config): Watch | null {
  try {
    return watchSchema.parse(JSON.parse(fs.readFileSync(watchFile(cfg), 'utf8')))
  } catch {
    return null
  }
}

export function watchCommand(w: Omit<Watch, 'pid' | 'started_at' | 'until'>, seconds: number): Command {
  return { argv: [path.join(TOOLKIT_DIR, 'scripts', 'run.sh'), 'watch', w.tag, '--previous', w.previous, '--event', w.event_id, '--seconds', String(seconds)] }
}

/** After a switch: the watcher started and recorded; nothing when WATCH_SECONDS is 0 or there is nothing to go back to. */
export function startWatch(cfg: Config, w: Omit<Watch, 'pid' | 'started_at' | 'until'>): void {
  if (cfg.WATCH_SECONDS === 0) return
  const pid = startDetached(watchCommand(w, cfg.WATCH_SECONDS))
  if (pid === null) return
  const now = dayjs.utc()
  writeFileAtomic(watchFile(cfg), JSON.stringify({ ...w, pid, started_at: now.toISOString(), until: now.add(cfg.WATCH_SECONDS, 'second').toISOString() }, null, 2) + '\n', 0o644)
  log.info(`Watching ${w.tag} for ${cfg.WATCH_SECONDS}s (WATCH_SECONDS): it is rolled back to ${w.previous} if the bot turns unhealthy (watcher pid ${pid})`)
}

/** A new deploy or rollback: the running watch ends before anything changes. */
export async function endWatch(cfg: Config, why: string): Promise<void> {
  const w = readWatch(cfg)
  if (!w || isDryRun()) return
  fs.rmSync(watchFile(cfg), { force: true })
  if (!processAlive(w.pid)) return
  try {
    process.kill(w.pid, 'SIGTERM')
  } catch {
    return
  }
  for (let i = 0; i < 100 && processAlive(w.pid); i++) await sleep(100)
  log.info(`Ended the watch of ${w.tag} (${why})`)
}

/** The watcher's own check: is it still the one on record? */
export function stillWatching(cfg: Config, pid: number): boolean {
  return readWatch(cfg)?.pid === pid
}

export function forgetWatch(cfg: Config, pid: number): void {
  if (stillWatching(cfg, pid)) fs.rmSync(watchFile(cfg), { force: true })
}
