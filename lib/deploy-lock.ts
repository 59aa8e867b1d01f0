import path from 'node:path'
import type { Config } from './config.ts'
import { acquireLock, type Lock } from './lock.ts'
import { onInterrupt } from './main.ts'
import { isDryRun } from './runner.ts'

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
