import path from 'node:path'
import { TOOLKIT_DIR } from '../core/config.ts'
import type { Command } from '../core/runner.ts'

// The toolkit's own scripts as commands (run.sh <script>), for what starts one of them detached.

/** scripts/watch.ts for the release `tag`, rolling back to `previous` (lib/release/watch.ts) */
export function watchCommand(w: { tag: string; previous: string; event_id: string }, seconds: number): Command {
  return { argv: [path.join(TOOLKIT_DIR, 'scripts', 'run.sh'), 'watch', w.tag, '--previous', w.previous, '--event', w.event_id, '--seconds', String(seconds)] }
}
