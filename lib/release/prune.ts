import { requireCompose, type Context } from '../stack/context.ts'
import { messageOf } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { $, $read } from '../core/shell.ts'
import { readEvents, readState, TAG, type DeployEvent } from './deploy-state.ts'
import { pullImage, requireImage } from './release.ts'
import { dayjs } from '../core/time.ts'
import { outsideRetention } from '../core/retention.ts'

// After a successful deploy: the disk must not fill with old releases (the data model keeps an
// artifact 30 days for rollbacks, then prunes it). A release's image goes once it is neither among
// the last KEEP_RELEASES nor used within RELEASE_RETENTION_DAYS, and never the running or the
// previous one (artifacts.json: what a rollback needs without a pull). Dangling images and this
// project's stopped one-off containers (`compose run` killed before its --rm) go too. Pruning is
// housekeeping: a failure is a warning and never fails the deploy that just succeeded.

export interface LocalRelease {
  tag: string
  /** when the image was built (docker's Created); null when Docker printed something unparseable */
  createdAt: Date | null
}

export interface KeepRules {
  keep: number
  retentionDays: number
  /** artifacts.json's current and previous artifact ids */
  protect: readonly (string | null)[]
  now: Date
}

/**
 * The tags to remove. A release's time is the latest of its image's build and of the audit
 * events naming it (a deploy of it, a rollback to it): a release used yesterday is young whatever
 * its build date. Anything whose time cannot be told is kept.
 */
export function releasesToRemove(images: readonly LocalRelease[], events: readonly DeployEvent[], rules: KeepRules): string[] {
  const lastUse = new Map<string, number>()
  for (const e of events) {
    const t = dayjs.utc(e.completed_at ?? e.started_at).valueOf()
    if (!Number.isNaN(t) && t > (lastUse.get(e.artifact_id) ?? -Infinity)) lastUse.set(e.artifact_id, t)
  }
  const timed = images.map((image) => ({ tag: image.tag, at: Math.max(image.createdAt?.getTime() ?? -Infinity, lastUse.get(image.tag) ?? -Infinity) }))
  const newestFirst = timed.filter((r) => r.at > -Infinity).sort((a, b) => b.at - a.at)
  const cutoff = dayjs.utc(rules.now).subtract(rules.retentionDays, 'day').valueOf()
  return outsideRetention(newestFirst, { count: rules.keep, expired: (r) => r.at < cutoff, protected: (r) => rules.protect.includes(r.tag) }).map((r) => r.tag)
}

/** Docker's `CreatedAt` in `image ls` ("2026-12-07 04:50:52 +0000 UTC"); null when it is not that. */
export function parseCreatedAt(text: string): Date | null {
  const m = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) ([+-]\d{2})(\d{2})\b/.exec(text.trim())
  if (!m) return null
  const date = dayjs(`${m[1]}T${m[2]}${m[3]}:${m[4]}`)
  return date.isValid() ? date.toDate() : null
}

/** The local tags of the bot's image repository that name a release (v1.2.3 or a commit SHA). */
export function parseReleaseImages(text: string): LocalRelease[] {
  return text.split('\n').flatMap((line): LocalRelease[] => {
    const [tag = '', created = ''] = line.split('\t')
    return TAG.test(tag) ? [{ tag, createdAt: parseCreatedAt(created) }] : []
  })
}

/** After a successful deploy. Every part is tried; what fails is one warning naming the cleanup by hand. */
export async function pruneOldReleases(ctx: Context): Promise<void> {
  const problems: string[] = []
  // the containers first: an image a stopped container still uses cannot be removed
  const oneOffs = await pruneOneOffs(ctx).catch((error: unknown) => {
    problems.push(`one-off containers: ${messageOf(error)}`)
    return 0
  })
  const removed = await pruneReleaseImages(ctx, problems).catch((error: unknown) => {
    problems.push(`release images: ${messageOf(error)}`)
    return []
  })
  // untagged images nothing uses (a tag pulled again leaves its old image dangling)
  const dangling = await $({ nothrow: true })`docker image prune --force`
  if (dangling.exitCode !== 0) problems.push(`dangling images: ${dangling.stderr.trim() || `exit ${dangling.exitCode}`}`)
  const reclaimed = /Total reclaimed space:\s*(\S+)/.exec(dangling.stdout)?.[1]
  log.info(`Pruned ${removed.length ? `old release image(s) ${removed.join(', ')}` : 'no release image'} (keeping the last ${ctx.cfg.KEEP_RELEASES} and those used within ${ctx.cfg.RELEASE_RETENTION_DAYS} days), ${oneOffs} stopped one-off container(s), dangling images${reclaimed ? ` (${reclaimed} reclaimed)` : ''}`)
  if (problems.length) log.warn(`Pruning was incomplete (the deploy stands): ${problems.join('; ')}. See docker system df; remove by hand with docker image rm / docker image prune`)
}

async function pruneReleaseImages(ctx: Context, problems: string[]): Promise<string[]> {
  const repository = requireImage(ctx.cfg)
  const state = readState(ctx.cfg.ARTIFACTS_FILE, ctx.cfg.legacyArtifactsFile)
  const images = parseReleaseImages((await $read({ timeoutMs: 60_000 })`docker image ls --format '{{.Tag}}\t{{.CreatedAt}}' ${repository}`).stdout)
  const doomed = releasesToRemove(images, readEvents(ctx.cfg.AUDIT_LOG), {
    keep: ctx.cfg.KEEP_RELEASES,
    retentionDays: ctx.cfg.RELEASE_RETENTION_DAYS,
    protect: [state.current?.artifact_id ?? null, state.previous?.artifact_id ?? null],
    now: new Date(),
  })
  const removed: string[] = []
  for (const tag of doomed) {
    // by name, without --force: an image a container still uses stays, and a shared ID is only untagged
    const result = await $({ nothrow: true, timeoutMs: 2 * 60_000 })`docker image rm ${`${repository}:${tag}`}`
    if (result.exitCode === 0) removed.push(tag)
    else problems.push(`${repository}:${tag}: ${result.stderr.trim().split('\n').pop() ?? `exit ${result.exitCode}`}`)
  }
  return removed
}

async function pruneOneOffs(ctx: Context): Promise<number> {
  const project = `label=com.docker.compose.project=${requireCompose(ctx).project}`
  const stopped = await $read({ timeoutMs: 30_000 })`docker ps --all --quiet --filter ${project} --filter label=com.docker.compose.oneoff=True --filter status=exited --filter status=created --filter status=dead`
  const ids = stopped.stdout.split('\n').filter(Boolean)
  if (ids.length) await $({ timeoutMs: 2 * 60_000 })`docker rm ${ids}`
  return ids.length
}

/**
 * A rollback's image: the one kept on this host when it is there (the running and previous
 * releases always are), pulled otherwise. A rollback must not depend on the registry being up.
 */
export async function releaseImageForRollback(ctx: Context, tag: string): Promise<void> {
  const image = `${requireImage(ctx.cfg)}:${tag}`
  if ((await $read({ nothrow: true, timeoutMs: 30_000 })`docker image inspect --format '{{.Id}}' ${image}`).exitCode === 0) {
    log.info(`Using ${image} kept on this host (no pull)`)
    return
  }
  await pullImage(requireCompose(ctx), tag, null)
}
