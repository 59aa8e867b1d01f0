import { type Context } from '../stack/context.ts'
import { freeMb } from '../core/disk.ts'
import { OpsError, messageOf } from '../core/errors.ts'
import { formatMb } from '../core/format.ts'
import { log } from '../core/log.ts'
import { confirmDestructive } from '../core/prompt.ts'
import { $read, isDryRun } from '../core/shell.ts'
import { abort, begin, checkFailure, checkoutRelease, goNoGo, preDeploymentBackup, recordSuccess, resolveTag, runMigrations, settleEvent, settleInterruptedRuns, undoRequest, update, validateEnvFile, type Attempt, type DeployOptions } from '../release/deploy-attempt.ts'
import { readState, type DeployState } from '../release/deploy-state.ts'
import { clearWebhook, registerWebhook } from '../release/mode.ts'
import { startWatch } from '../release/watch.ts'
import { requireImage } from '../release/release.ts'
import { localSwarm } from './cluster.ts'
import { runJob } from './job.ts'
import { rollBackOnSwarm } from './rollback.ts'
import { botExists, notConverged, specTag, waitForUpdate } from './service.ts'
import { deployStack, isWebhook, stackName } from './stack.ts'

// deploy on a Swarm (ORCHESTRATOR=swarm): the steps, log lines, exit codes, audit events and
// notifications of scripts/deploy.ts; what differs is how a release runs. Nodes pull the image as
// their tasks start; migrations run as a one-off task of the new image; the switch is `docker
// stack deploy`, which Swarm rolls out one task at a time (start-first in webhook mode) and rolls
// back by itself when a new task never turns healthy; the gate is the converged tasks.

export async function deployOnSwarm(ctx: Context, opts: DeployOptions): Promise<void> {
  if (opts.build) throw new OpsError('usage', '--build is for one host: on a Swarm every node pulls the image from the registry (push it there first)')
  settleInterruptedRuns(ctx)
  const state = readState(ctx.cfg.ARTIFACTS_FILE, ctx.cfg.legacyArtifactsFile)
  const a = begin(ctx, state, opts, (attempt, f) => rollBackOnSwarm(ctx, undoRequest(attempt, f)))
  try {
    validateEnvironment(ctx)
    const sha = await resolveTag(ctx, opts.tag)
    if (!opts.force && (await alreadyRunning(ctx, state, opts.tag))) return settleEvent(a, 'success', null)
    await preflight(ctx, opts)
    await confirmDestructive(`Deploy ${opts.tag} (${sha.slice(0, 12)}) replacing ${a.previous ?? 'nothing'} on Swarm stack ${stackName(ctx.cfg)}.`, opts.yes)
    await preDeploymentBackup(a)
    await checkoutRelease(a)
    await runMigrations(a, () => runJob(ctx, a.tag, 'migrate', ctx.cfg.MIGRATE_COMMAND))
    await switchToRelease(a)
    await registerWebhook(ctx.cfg)
    await recordSuccess(a)
  } catch (error) {
    settleEvent(a, error instanceof OpsError && error.kind === 'refused' ? 'cancelled' : 'failed', messageOf(error))
    throw error
  }
  // The watch window (WATCH_SECONDS): scripts/watch.ts asks Swarm whether every replica still runs.
  if (a.previous && !isDryRun()) startWatch(ctx.cfg, { tag: opts.tag, previous: a.previous, event_id: a.event.event_id })
  log.info(isDryRun() ? 'Dry run complete: nothing was changed' : `Deployment successful: ${opts.tag}`)
}

// ---- the steps -----------------------------------------------------------------------------------

function validateEnvironment(ctx: Context): void {
  validateEnvFile(ctx)
  if (ctx.cfg.DB_MODE !== 'url') throw new OpsError('config', 'ORCHESTRATOR=swarm needs DB_MODE=url (a managed database, or one outside the stack): README "More than one droplet"')
  requireImage(ctx.cfg)
}

async function alreadyRunning(ctx: Context, state: DeployState, tag: string): Promise<boolean> {
  if (state.current?.artifact_id !== tag || (await specTag(ctx.cfg)) !== tag || (await notConverged(ctx.cfg, tag)) !== null) return false
  log.info(`${tag} is already deployed and healthy; nothing to do (use --force to redeploy)`)
  return true
}

/** Go/no-go: disk, a Swarm manager, the image in the registry, the nodes the stack is pinned to. */
async function preflight(ctx: Context, opts: DeployOptions): Promise<void> {
  await goNoGo(opts.skipChecks, () => {
    const image = `${requireImage(ctx.cfg)}:${opts.tag}`
    const labels = isWebhook(ctx.cfg) ? ['ttg.data', 'ttg.ingress'] : ['ttg.data']
    return [
      ['disk', async () => (freeMb(ctx.cfg.DEPLOY_DIR) < ctx.cfg.MIN_FREE_DISK_MB ? `${formatMb(freeMb(ctx.cfg.DEPLOY_DIR))} free, ${formatMb(ctx.cfg.MIN_FREE_DISK_MB)} required` : null)],
      ['docker', async () => checkFailure(await $read({ nothrow: true, timeoutMs: 30_000 })`docker info --format '{{.ServerVersion}}'`)],
      ['swarm manager', async () => ((await localSwarm().catch(() => null))?.manager ? null : 'this host is not a Swarm manager (setup-droplet --swarm init)')],
      ['node labels', async () => missingLabels(labels)],
      ['image', async () => checkFailure(await $read({ nothrow: true, timeoutMs: 60_000 })`docker manifest inspect --insecure ${image}`, `${image} is not in the registry`)],
    ]
  })
}

async function missingLabels(labels: string[]): Promise<string | null> {
  const ids = (await $read({ nothrow: true, timeoutMs: 30_000 })`docker node ls --quiet`).stdout.trim().split('\n').filter(Boolean)
  const found = ids.length ? (await $read({ nothrow: true, timeoutMs: 30_000 })`docker node inspect --format ${'{{range $k, $v := .Spec.Labels}}{{$k}}={{$v}} {{end}}'} ${ids}`).stdout : ''
  const missing = labels.filter((l) => !found.includes(`${l}=true`))
  return missing.length ? `no node is labelled ${missing.join(', ')} (docker node update --label-add ${missing[0]}=true <node>)` : null
}

/**
 * The stack deploy and Swarm's rolling update: a new task must pass its health check before the
 * next old one stops (start-first in webhook mode, so the old version serves throughout); a task
 * that never does makes Swarm roll the service back by itself (update_config.failure_action).
 */
async function switchToRelease(a: Attempt): Promise<void> {
  log.info('Restarting services')
  const first = !(await botExists(a.ctx.cfg))
  const since = new Date()
  try {
    // Telegram answers a poller 409 Conflict while a webhook is set.
    if (!isWebhook(a.ctx.cfg)) await clearWebhook(a.ctx.cfg, false)
    await deployStack(a.ctx, a.tag)
  } catch (error) {
    await abort(a, { stage: 'switch', reason: messageOf(error) })
  }
  const downtime = isWebhook(a.ctx.cfg) && !a.stopFirst && !first ? 0 : null
  update(a, { downtime_seconds: downtime })
  log.info(`Services started${downtime === null ? '' : ` (downtime ${downtime.toFixed(1)}s)`}`)
  log.info('Running health checks')
  const outcome = await waitForUpdate(a.ctx, a.tag, since)
  if (outcome.state === 'rolled_back') await abort(a, { stage: 'health', reason: `Swarm rolled the update back: ${outcome.message}`, previousServing: true })
  if (outcome.state === 'failed') await abort(a, { stage: 'health', reason: outcome.message })
  log.info('All services healthy')
}
