import { execInContainer } from './docker.ts'
import type { Command } from '../core/runner.ts'

// Runs inside the bot container (the bot is Python; its image need not have curl): reads the
// internal /health and, because a polling bot may have no listener, the heartbeat file's age.
const BOT_PROBE = `
import json, os, time, urllib.request, urllib.error
out = {}
started = time.monotonic()
try:
    with urllib.request.urlopen(os.environ.get("HEALTH_URL", "http://127.0.0.1:8000/health"), timeout=9) as r:
        out["body"] = json.loads(r.read())
except urllib.error.HTTPError as e:
    out["body"] = json.loads(e.read() or b"{}")
except Exception as e:
    reason = getattr(e, "reason", e)
    out["error"] = str(reason)
    out["timeout"] = isinstance(reason, TimeoutError) or "timed out" in str(reason)
out["ms"] = int((time.monotonic() - started) * 1000)
try:
    out["heartbeat_age_s"] = round(time.time() - os.stat(os.environ.get("HEARTBEAT_FILE", "/tmp/heartbeat")).st_mtime, 1)
except OSError:
    out["heartbeat_age_s"] = None
print(json.dumps(out))
`

/** lib/stack/health.ts reads its one line of JSON (BotProbe) */
export function botProbeCommand(containerId: string, timeoutMs: number): Command {
  return execInContainer(containerId, ['python3', '-c', BOT_PROBE], timeoutMs)
}
