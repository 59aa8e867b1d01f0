// watch <tag> --previous <tag> --event <id> --seconds N: the watch window after a switch. Started by
// deploy (detached; it outlives the deploy command), not by hand. Every 5 s it checks the bot; three
// unhealthy checks in a row within the window and the release is rolled back to the one before, by
// the one rollback (lib/release/rollback.ts: the data restored only if the schema changed), recorded
// as an automated rollback event linked to the deploy, the deploy recorded as rolled_back with the
// reason, and the channels told once. A new deploy or rollback ends it first (lib/release/watch.ts).
import os from 'node:os'
import { setTimeout as sleep } from 'node:timers/promises'
import { stringOption, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { openContext, type Context } from '../lib/core/config.ts'
import { takeDeployLock } from '../lib/core/lock.ts'
import { OpsError } from '../lib/core/errors.ts'
import { log } from '../lib/core/log.ts'
import { isEntryPoint, runMain } from '../lib/core/main.ts'
import { notify } from '../lib/core/notify.ts'
import { completeEvent, readEvents, readState } from '../lib/release/deploy-state.ts'
import { checkHealth, unhealthyLines, type HealthReport } from '../lib/release/health.ts'
import { rollBackOnSwarm } from '../lib/swarm/rollback.ts'
import { botHealthReport } from '../lib/swarm/service.ts'
import { usesSwarm } from '../lib/swarm/stack.ts'
import { record } from '../lib/release/release.ts'
import { fromRecordedRelease, rollBack } from '../lib/release/rollback.ts'
import { forgetWatch, stillWatching } from '../lib/release/watch.ts'

const spec = {
  name: 'watch',
  summary: 'The watch window after a switch: roll the release back if the bot turns unhealthy (started by deploy)',
  usage: 'watch <tag> --previous <tag> --event <event-id> --seconds <n>',
  positionals: [{ name: 'tag', description: 'the release just switched to' }],
  maxPositionals: 1,
  options: {
    previous: { type: 'string', value: 'TAG', description: 'the release to go back to' },
    event: { type: 'string', value: 'ID', description: "the deploy's event id in the audit log" },
    seconds: { type: 'string', value: 'N', description: 'length of the window (WATCH_SECONDS)' },
  },
  exitCodes: [
    [0, 'The window passed healthy, or a new deploy or rollback ended it'],
    [1, 'The release was rolled back (or the rollback failed: the log says which)'],
  ],
  env: [['WATCH_SECONDS', 'the window deploy starts this with (300; 0: no watch)']],
  notes: ['deploy starts it after every switch and records it in DEPLOY_DIR/watch.json; it is not meant to be run by hand.'],
  examples: ['watch v1.2.0 --previous v1.1.0 --event 0b6f... --seconds 300'],
} satisfies CliSpec

const EVERY_MS = 5000
const STRIKES = 3

// The CLI, when this file is the one node started.
if (isEntryPoint(import.meta.url)) await runMain(spec, { exitCodes: {}, failureLine: 'Watch ended with a rollback', asDeployUser: true }, watch)

export async function watch(cli: ParsedCli<typeof spec>): Promise<void> {
  const tag = cli.positionals[0]
  const previous = stringOption(cli, 'previous')
  const eventId = stringOption(cli, 'event')
  const seconds = Number(stringOption(cli, 'seconds'))
  if (!tag || !previous || !eventId || !Number.isInteger(seconds) || seconds <= 0) throw new OpsError('usage', 'watch needs <tag>, --previous, --event and --seconds (it is started by deploy)')
  const ctx = await openContext()
  const swarm = await usesSwarm(ctx.cfg)
  const reason = await unhealthyWithin(ctx, seconds, swarm ? () => botHealthReport(ctx.cfg, tag) : () => checkHealth(ctx, ['bot']))
  if (reason === null) {
    forgetWatch(ctx.cfg, process.pid)
    return
  }
  await rollBackRelease(ctx, { tag, previous, eventId, reason }, swarm ? rollBackOnSwarm : rollBack)
}

/** Why the bot went unhealthy, or null once the window passed (or a new deploy took over). */
async function unhealthyWithin(ctx: Context, seconds: number, check: () => Promise<HealthReport>): Promise<string | null> {
  const started = Date.now()
  let strikes = 0
  while (Date.now() - started < seconds * 1000) {
    await sleep(EVERY_MS)
    if (!stillWatching(ctx.cfg, process.pid)) return null
    const report = await check().catch(() => null)
    const unhealthy = report?.services.bot?.status === 'unhealthy'
    strikes = unhealthy ? strikes + 1 : 0
    if (report && strikes >= STRIKES) return `the bot turned unhealthy ${Math.round((Date.now() - started) / 1000)}s after the switch: ${unhealthyLines(report).join(', ')}`
  }
  log.info(`Watch window passed: healthy for ${seconds}s after the switch`)
  return null
}

async function rollBackRelease(ctx: Context, w: { tag: string; previous: string; eventId: string; reason: string }, rollBackTo: typeof rollBack | typeof rollBackOnSwarm): Promise<void> {
  // A deploy or rollback holding the lock ends this watch anyway: leave the host to it.
  const lock = await takeDeployLock(ctx.cfg, `watch rollback of ${w.tag}`).catch(() => null)
  if (!lock || !stillWatching(ctx.cfg, process.pid)) return
  forgetWatch(ctx.cfg, process.pid)
  log.error(`Watch: ${w.tag} ${w.reason}; rolling back to ${w.previous}`)
  const told = `Watch: ${w.tag} ${w.reason} on ${os.hostname()};`
  try {
    await rollBackTo(ctx, fromRecordedRelease(ctx, {
      state: readState(ctx.cfg.ARTIFACTS_FILE, ctx.cfg.legacyArtifactsFile),
      target: w.previous,
      triggeredBy: 'automated',
      rollbackOf: w.eventId,
      undoing: `the watch of ${w.tag}`,
      context: told,
      db: { touched: false, keepData: false },
      yes: true,
      stopFirst: false,
      // the watcher tells the outcome itself, once
      message: null,
    }))
    markDeploy(ctx, w.eventId, 'rolled_back', `watch: ${w.reason}; rolled back to ${w.previous}`)
    await notify(ctx.cfg, `${told} rolled back to ${w.previous}.`)
  } catch (error) {
    markDeploy(ctx, w.eventId, 'failed', `watch: ${w.reason}; the rollback to ${w.previous} failed`)
    throw error
  } finally {
    lock.release()
  }
  throw new OpsError('health_failed', `${w.tag} rolled back to ${w.previous} by the watch`, { alreadyLogged: true, alreadyNotified: true })
}

/** The deploy's own event, which said success, now says why it did not last. */
function markDeploy(ctx: Context, eventId: string, status: 'rolled_back' | 'failed', reason: string): void {
  const event = readEvents(ctx.cfg.AUDIT_LOG).reverse().find((e) => e.event_id === eventId)
  if (event) record(ctx, completeEvent(event, status, reason))
}
