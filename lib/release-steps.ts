import os from 'node:os'
import { requireCompose, type Context } from './context.ts'
import { appendEvent, completeEvent, TAG, writeState, type Artifact, type DeployEvent, type DeployState } from './deploy-state.ts'
import { setEnvValue } from './env-file.ts'
import { isoSeconds } from './format.ts'
import { checkHealth, SERVICES, unhealthyLines, waitUntilHealthy } from './health.ts'
import { log } from './log.ts'
import { notify } from './notify.ts'
import { gitCheckout, gitResolve, imageDigest, requireImage, schemaRevision, switchTo } from './release.ts'
import { isDryRun, run, tryRun } from './runner.ts'

// Steps deploy.ts and rollback.ts both take, each logging the contract's lines.
export interface GateResult {
  passed: boolean
  /** why it failed: the service lines, or what makes the bot certain to stay down */
  reason: string
}

/** The health gate, through health-check's own code; ends early when the bot cannot recover. */
export async function healthGate(ctx: Context): Promise<GateResult> {
  if (isDryRun()) return { passed: true, reason: '' }
  const { report, waitedOut, dead } = await waitUntilHealthy(ctx, SERVICES, ctx.cfg.HEALTH_CHECK_TIMEOUT * 1000)
  if (!waitedOut) return { passed: true, reason: '' }
  const failing = unhealthyLines(report)
  for (const line of failing) log.error(line)
  return { passed: false, reason: dead ?? `not healthy after ${ctx.cfg.HEALTH_CHECK_TIMEOUT}s: ${failing.join('; ')}` }
}

export async function isHealthyNow(ctx: Context): Promise<boolean> {
  return (await checkHealth(ctx, SERVICES)).overall_status === 'healthy'
}

export async function checkout(ctx: Context, tag: string): Promise<void> {
  await run(gitCheckout(ctx.cfg.APP_DIR, tag))
}

/** Runs `tag`; returns the measured downtime in seconds, to a tenth (null when not measurable). */
export async function switchVersion(ctx: Context, tag: string): Promise<number | null> {
  const downtime = await switchTo(ctx.cfg, requireCompose(ctx), tag)
  return isDryRun() || downtime === null ? null : Math.round(downtime * 10) / 10
}

export function record(ctx: Context, event: DeployEvent): DeployEvent {
  appendEvent(ctx.cfg.AUDIT_LOG, event)
  return event
}

/**
 * The Deployment Artifact of `ref` as it runs now: its commit, image and digest, the schema. A
 * name that is neither a release tag nor a full SHA (setup's APP_VERSION may be one) is recorded
 * by its commit, the form deploy and rollback accept.
 */
export async function artifactFor(ctx: Context, ref: string, at: { rollbackFrom: string | null; schemaRevision: string | null }): Promise<Artifact> {
  const image = `${requireImage(ctx.cfg)}:${ref}`
  const sha = (await tryRun(gitResolve(ctx.cfg.APP_DIR, ref))).stdout.trim()
  return {
    artifact_id: TAG.test(ref) ? ref : sha,
    git_commit_sha: sha,
    git_tag: /^v\d+\.\d+\.\d+$/.test(ref) ? ref : null,
    docker_image_uri: image,
    docker_image_digest: await imageDigest(image),
    deployed: true,
    deployed_at: isoSeconds(new Date()),
    rollback_from: at.rollbackFrom,
    schema_revision: at.schemaRevision,
  }
}

export interface Deployed {
  state: DeployState
  tag: string
  event: DeployEvent
  /** the version a rollback left (null for a deploy) */
  rollbackFrom: string | null
  /** the notification's text */
  message: string
}

/**
 * The one way a version becomes the recorded current one, for deploy and rollback alike: the
 * artifact (SHA, image digest, schema), APP_VERSION in .env.production so a reboot starts it, the
 * event closed as success, the notification.
 */
export async function recordDeployed(ctx: Context, d: Deployed): Promise<void> {
  if (isDryRun()) return
  const artifact = await artifactFor(ctx, d.tag, { rollbackFrom: d.rollbackFrom, schemaRevision: d.event.schema_revision_after ?? (await schemaRevision(ctx.db)) })
  writeState(ctx.cfg.ARTIFACTS_FILE, { current: artifact, previous: d.state.current ? { ...d.state.current, deployed: false } : null })
  setEnvValue(ctx.cfg.envFile, 'APP_VERSION', d.tag)
  record(ctx, completeEvent({ ...d.event, health_check_passed: true }, 'success', null))
  await notify(ctx.cfg, `${d.message} on ${os.hostname()}.`)
}
