import { shellInContainer } from './docker.ts'
import type { Command } from '../core/runner.ts'

// nginx inside its container: blue-green's pin of the webhook upstream, and its worker processes.

const PIN_FILE = '/etc/nginx/conf.d/bot-pin.inc'

/**
 * Writes the pin and reloads only if nginx accepts the whole configuration; a refused pin is
 * removed again, so a later restart never trips on it. A reload is graceful: old workers finish
 * their requests, new ones take the new config.
 */
export function pinCommand(nginxId: string, target: string): Command {
  const script = `set -e; cat > ${PIN_FILE}.new; mv ${PIN_FILE}.new ${PIN_FILE}; if ! nginx -t -q; then rm -f ${PIN_FILE}; exit 1; fi; nginx -s reload`
  return shellInContainer(nginxId, script, 30_000, `set $bot_webhook http://${target}:8080;\n`)
}

/** The pin in force: `set $bot_webhook http://<name>:8080;`, or nothing. */
export function readPinCommand(nginxId: string): Command {
  return shellInContainer(nginxId, `cat ${PIN_FILE} 2>/dev/null || true`, 30_000, undefined, false)
}

/** pids of nginx's worker processes (the process title nginx gives them); no ps in every image. */
export function workersCommand(nginxId: string): Command {
  const script = `for d in /proc/[0-9]*; do case "$(tr '\\0' ' ' < $d/cmdline 2>/dev/null)" in "nginx: worker process"*) echo \${d#/proc/};; esac; done`
  return shellInContainer(nginxId, script, 30_000, undefined, false)
}
