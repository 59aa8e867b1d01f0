import { messageOf } from './errors.ts'
import { log } from './log.ts'

// Work to undo when the operator presses Ctrl-C or systemd sends SIGTERM mid-step: registered by
// the step that made it, run (newest first, 15 s at most) by the signal handlers in main.ts.

type Cleanup = () => void | Promise<void>
const cleanups: Cleanup[] = []

/** Work to undo if the operator presses Ctrl-C or systemd sends SIGTERM mid-step. */
export function onInterrupt(cleanup: Cleanup): () => void {
  cleanups.push(cleanup)
  return () => void cleanups.splice(cleanups.indexOf(cleanup), 1)
}

export async function runCleanups(): Promise<void> {
  const timeout = new Promise((resolve) => setTimeout(resolve, 15_000).unref())
  for (const cleanup of [...cleanups].reverse()) {
    await Promise.race([Promise.resolve().then(cleanup).catch((e) => log.warn(`Cleanup failed: ${messageOf(e)}`)), timeout])
  }
}
