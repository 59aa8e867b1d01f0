import { sleep } from 'zx'
import { composeBase, composeEnv, type ComposeProject } from '../commands/compose.ts'
import { findContainer } from '../commands/docker.ts'
import { restoreTargetOptions, stanzaCreate, ttgPitrDiscard, ttgPitrDrill, ttgPitrPutBack, ttgPitrRestore, type RepoNumber } from '../commands/pgbackrest.ts'
import { psql } from '../commands/postgres.ts'
import { requireCompose, type Context } from '../stack/context.ts'
import { confirmDestructive } from '../core/prompt.ts'
import { OpsError, messageOf } from '../core/errors.ts'
import { fileStamp, formatAge, isoSeconds } from '../core/format.ts'
import { log } from '../core/log.ts'
import { progressReporter } from '../core/progress.ts'
import { dayjs } from '../core/time.ts'
import { $, $read, isDryRun, timedOut } from '../core/shell.ts'
import { ensurePostgresImage } from './pitr-image.ts'
import { archiverStatus, pitrRepos, repoContents, requirePitr, type RepoContents } from './pitr.ts'
import { requireServerUp, restartAppServices } from './restore.ts'
import { requireRoomForRestoredCluster } from './scratch-room.ts'

// restore --to-time: the live data directory replaced by a base backup replayed through the WAL
// archive to a moment, or to its end. The previous data directory is kept, renamed inside the
// volume (deployment/postgres/ttg-pitr), until the restored one is verified; any failure before
// that puts it back as it was.

export type Target = Date | 'latest'

const ZONED = /^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(Z|[+-]\d{2}(?::?\d{2})?)$/i

/** `latest`, or a moment with its zone ("2026-12-02 10:31:00+00"): a bare time is ambiguous. */
export function parseTarget(text: string, now = new Date()): Target {
  if (text === 'latest') return 'latest'
  const m = ZONED.exec(text.trim())
  if (!m) throw new OpsError('usage', `--to-time "${text}": expected latest or a time with its zone, such as "2026-12-02 10:31:00+00" or 2026-12-02T10:31:00Z`)
  const zone = m[3] === 'Z' || m[3] === 'z' ? 'Z' : (m[3] ?? '').replace(/^([+-]\d{2})(\d{2})$/, '$1:$2').replace(/^([+-]\d{2})$/, '$1:00')
  const at = dayjs(`${m[1]}T${m[2]}${zone}`)
  if (!at.isValid()) throw new OpsError('usage', `--to-time "${text}" is not a valid time`)
  if (at.isAfter(now)) throw new OpsError('usage', `--to-time ${isoSeconds(at.toDate())} is in the future; use --to-time latest for everything archived`)
  return at.toDate()
}

export function describeTarget(target: Target): string {
  return target === 'latest' ? 'the end of the WAL archive (latest)' : isoSeconds(target)
}

/** repo1 when it holds a base backup; the off-site repo2 when only it does (the droplet's disk was lost too). */
function chooseRepo(contents: RepoContents, repos: RepoNumber[]): RepoNumber {
  const repo = repos.find((r) => contents.backups.some((b) => b.repo === r))
  if (!repo) throw new OpsError('not_found', `No base backup in ${repos.map((r) => `repo${r}`).join(' or ')} (pgBackRest: ${contents.status}); take one with backup.sh --physical`)
  return repo
}

export async function restoreToTime(ctx: Context, target: Target, assumeYes: boolean): Promise<void> {
  requirePitr(ctx.cfg)
  const p = requireCompose(ctx)
  await ensurePostgresImage(ctx.cfg.POSTGRES_IMAGE)
  const contents = await repoContents(ctx)
  const repo = chooseRepo(contents, pitrRepos(ctx.cfg))
  const oldest = contents.backups.filter((b) => b.repo === repo)[0]
  log.info(`Restoring to ${describeTarget(target)} from repo${repo}; the earliest moment it holds is ${oldest ? isoSeconds(oldest.stoppedAt) : 'unknown'}`)
  await requireRoomForRestoredCluster(ctx, contents.backups.filter((b) => b.repo === repo))
  await confirmDestructive(lossStatement(ctx, target), assumeYes)
  await stopServices(ctx, p, ctx.cfg.APP_SERVICES)
  await archiveEverything(ctx, p)
  await stopServices(ctx, p, ['postgres'])
  try {
    await restoreAside(p, target, repo)
    await startRecovered(ctx, p, target)
    await verifyRestored(ctx)
  } catch (error) {
    const untouched = error instanceof NothingMoved
    if (untouched) await startAgain(ctx, p)
    else await putBack(ctx, p, error)
    const services = ctx.cfg.APP_SERVICES.length ? ` and ${ctx.cfg.APP_SERVICES.join(', ')} restarted` : ''
    throw new OpsError('restore_failed', `Point-in-time restore to ${describeTarget(target)} failed: ${messageOf(error)}. ${untouched ? 'Nothing was changed; postgres' : 'The previous data directory is back as it was'}${services}`)
  }
  await ttgPitrDiscard(p)
  log.info('Restored data verified; the previous data directory was removed')
  await renewStanza(p)
  // The new timeline's first segment into the archive now: until it is there, a later recovery to
  // latest would read the old timeline's copy of that segment past the fork (the writes this
  // restore undid, such as a DROP, would come back).
  await archiveEverything(ctx, p)
  await restartAppServices(ctx, '')
  await requireServerUp(ctx)
}

/**
 * The server archives its new timeline from here on. A repository the disaster emptied (repo1
 * on a lost disk) becomes a stanza again, so archiving to it works; its base backups start with
 * the next backup --physical.
 */
async function renewStanza(p: ComposeProject): Promise<void> {
  const renewed = await stanzaCreate(p, { nothrow: true })
  if (renewed.exitCode !== 0) log.warn(`pgbackrest stanza-create after the restore failed (${renewed.stderr.trim().split('\n').at(-1)}); health-check postgres shows whether archiving works`)
  log.info('Take a full base backup soon (backup.sh --physical full): recovery to moments after this restore starts from it')
}

function lossStatement(ctx: Context, target: Target): string {
  const services = ctx.cfg.APP_SERVICES.length ? `, stops ${ctx.cfg.APP_SERVICES.join(', ')} meanwhile` : ''
  if (target === 'latest') return `This replaces the database cluster of "${ctx.db.database}" with the last base backup replayed to the end of the WAL archive${services}. Writes not archived yet are archived first when the server runs; if it does not, the last ${ctx.cfg.PITR_ARCHIVE_TIMEOUT}s or so may be lost.`
  const lost = dayjs().diff(target, 'second')
  return `This replaces the database cluster of "${ctx.db.database}" with its state at ${isoSeconds(target)}${services}: every write after it, the last ${formatAge(lost)} (now ${isoSeconds()}), is lost.`
}

async function stopServices(ctx: Context, p: ComposeProject, services: string[]): Promise<void> {
  if (!services.length) return
  log.info(`Stopping ${services.join(', ')}`)
  const grace = services.includes('postgres') ? 60 : ctx.cfg.STOP_TIMEOUT
  await $({ env: composeEnv(p), timeoutMs: (grace + 60) * 1000 })`${composeBase(p)} stop --timeout ${grace} ${services}`
}

/**
 * With the bot stopped, the segment being written is closed (pg_switch_wal: otherwise recovery
 * ends before "latest") and the server waits until the archive holds it. A server that cannot
 * archive stops the restore here, before anything changed: restoring now would lose those writes.
 */
async function archiveEverything(ctx: Context, p: ComposeProject): Promise<void> {
  const postgres = await findContainer(p, 'postgres')
  if (postgres?.status !== 'running') {
    log.warn('The postgres server is not running: what it wrote after its last archived WAL segment cannot be saved now')
    return
  }
  if (isDryRun()) return
  await psql(ctx.db, ctx.db.database, 'SELECT pg_switch_wal()', { timeoutMs: 30_000 })
  const deadline = Date.now() + (ctx.cfg.PITR_ARCHIVE_TIMEOUT + 120) * 1000
  for (;;) {
    const status = await archiverStatus(ctx)
    if (status.waiting === 0) break
    if (Date.now() > deadline) {
      throw new OpsError('restore_failed', `WAL archiving does not keep up (${status.waiting} segment(s) waiting; last failure ${status.lastFailedWal ?? 'none'}): restoring now would lose the writes they hold. Nothing was changed; fix archiving (health-check postgres says why) and run restore again`)
    }
    await sleep(1000)
  }
  log.info('Every WAL segment written so far is archived')
}

/** ttg-pitr refused before moving anything (exit 3): there is nothing to put back. */
class NothingMoved extends OpsError {}

async function restoreAside(p: ComposeProject, target: Target, repo: RepoNumber): Promise<void> {
  log.info(`Restoring the base backup (pgBackRest, repo${repo}); the current data directory is kept aside until the restored one is verified`)
  const running = ttgPitrRestore(p, restoreTargetOptions(target, repo), { nothrow: true })
  const restored = await running
  if (timedOut(running)) throw new OpsError('timeout', `Timed out after 6 hours: ${running.cmd}`)
  if (restored.exitCode === 0) return
  // pgBackRest writes its ERROR lines to stdout (log-level-console), ttg-pitr to stderr.
  const said = `${restored.stdout}\n${restored.stderr}`.split('\n').filter((l) => /ERROR|ttg-pitr:/.test(l))
  const reason = said.slice(-2).map((l) => l.replace(/^.*?(ERROR: \[\d+\]: |ttg-pitr: )/, '')).join(' | ') || `exit ${restored.exitCode}`
  if (restored.exitCode === 3) throw new NothingMoved('restore_failed', reason)
  throw new OpsError('restore_failed', `pgBackRest could not restore: ${reason}`)
}

/** The server replays the archive and promotes itself; done when it accepts writes. */
async function startRecovered(ctx: Context, p: ComposeProject, target: Target): Promise<void> {
  log.info(`Starting postgres: recovery to ${describeTarget(target)}`)
  // Docker's restart count is the container's whole life: only restarts from here on count.
  const before = isDryRun() ? null : await findContainer(p, 'postgres')
  await startPostgres(p)
  if (isDryRun()) return
  const started = Date.now()
  const deadline = started + ctx.cfg.PITR_RECOVERY_TIMEOUT * 1000
  const progress = progressReporter('Recovering')
  try {
    for (;;) {
      const container = await findContainer(p, 'postgres')
      const restartedBefore = container && before?.id === container.id ? before.restarts : 0
      if (!container || container.status === 'exited' || container.status === 'dead' || container.status === 'restarting' || container.restarts > restartedBefore) {
        throw new OpsError('restore_failed', `the server stopped during recovery: ${await serverLastWords(container?.id ?? null)}`)
      }
      const answer = await psql(ctx.db, ctx.db.database, 'SELECT pg_is_in_recovery()', { read: true, nothrow: true, timeoutMs: 10_000 })
      if (answer.exitCode === 0 && answer.stdout.trim() === 'f') break
      if (Date.now() > deadline) throw new OpsError('restore_failed', `recovery did not finish within ${ctx.cfg.PITR_RECOVERY_TIMEOUT}s (PITR_RECOVERY_TIMEOUT)`)
      progress.update(`${Math.round((Date.now() - started) / 1000)}s`)
      await sleep(1000)
    }
  } finally {
    progress.done()
  }
  log.info(`Recovery complete in ${Math.round((Date.now() - started) / 1000)}s; the server accepts writes`)
}

async function serverLastWords(id: string | null): Promise<string> {
  if (!id) return 'its container is gone'
  const logs = await $read({ nothrow: true, timeoutMs: 30_000 })`docker logs --tail 40 ${id}`
  const lines = `${logs.stdout}\n${logs.stderr}`.split('\n').filter((l) => /FATAL|PANIC|ERROR/.test(l))
  return lines.slice(-2).map((l) => l.replace(/^.*?(FATAL|PANIC|ERROR):\s*/, '$1: ')).join(' | ') || 'no FATAL line in its log'
}

/** Back to the data directory as it was before: the restored one is removed, the kept one moved back. */
async function putBack(ctx: Context, p: ComposeProject, cause: unknown): Promise<void> {
  log.error(`Restore failed: ${messageOf(cause)}; putting the previous data directory back`)
  await $({ env: composeEnv(p), timeoutMs: 120_000 })`${composeBase(p)} stop --timeout 60 postgres`
  await ttgPitrPutBack(p)
  await startAgain(ctx, p)
}

async function startAgain(ctx: Context, p: ComposeProject): Promise<void> {
  await startPostgres(p)
  await restartAppServices(ctx, '')
}

async function startPostgres(p: ComposeProject): Promise<void> {
  await $({ env: composeEnv(p), timeoutMs: 5 * 60_000 })`${composeBase(p)} up --detach --no-deps postgres`
}

// ---- verification ------------------------------------------------------------------------------

/**
 * One statement that names and counts KEY_TABLES (or the two largest tables): the same text runs
 * against the restored live server and inside a drill's scratch server.
 */
export function keyTableCountSql(keyTables: readonly string[]): string {
  const filter = keyTables.length
    ? `WHERE relname IN (${keyTables.map(literal).join(', ')}) OR schemaname || '.' || relname IN (${keyTables.map(literal).join(', ')})`
    : ''
  return `SELECT schemaname || '.' || relname || '=' || (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', schemaname, relname), false, true, '')))[1]::text FROM pg_stat_user_tables ${filter} ORDER BY pg_total_relation_size(relid) DESC${keyTables.length ? '' : ' LIMIT 2'}`
}

function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`
}

/** "public.orders=1234" lines → counts; a key table missing or no table at all is a failed verification. */
export function checkCounts(output: string, keyTables: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>()
  for (const line of output.split('\n').filter(Boolean)) {
    const [name = '', count = ''] = line.split('=')
    counts.set(name, Number(count))
  }
  const missing = keyTables.filter((t) => ![...counts.keys()].some((name) => name === t || name.endsWith(`.${t}`)))
  if (missing.length) throw new OpsError('verify_failed', `key tables missing after recovery: ${missing.join(', ')}`)
  if (!counts.size) throw new OpsError('verify_failed', 'the recovered database has no tables')
  return counts
}

export function describeCounts(counts: Map<string, number>): string {
  return [...counts].map(([name, n]) => `${name}: ${n.toLocaleString('en-US')} rows`).join(', ')
}

async function verifyRestored(ctx: Context): Promise<void> {
  if (isDryRun()) return
  const output = (await psql(ctx.db, ctx.db.database, keyTableCountSql(ctx.cfg.KEY_TABLES), { read: true, timeoutMs: ctx.cfg.DB_OPERATION_TIMEOUT * 1000 })).stdout.trim()
  log.info(`Verified: ${describeCounts(checkCounts(output, ctx.cfg.KEY_TABLES))}`)
}

// ---- drill -------------------------------------------------------------------------------------

/**
 * restore --drill --to-time: the same restore into a scratch volume in a one-off container, the
 * live server untouched; the recovered server counts the key tables, then everything is removed.
 */
export async function drillToTime(ctx: Context, target: Target): Promise<Map<string, number>> {
  requirePitr(ctx.cfg)
  const p = requireCompose(ctx)
  await ensurePostgresImage(ctx.cfg.POSTGRES_IMAGE)
  const repo = chooseRepo(await repoContents(ctx), pitrRepos(ctx.cfg))
  const volume = `${p.project}_pitr_drill_${fileStamp()}`
  log.info(`Starting point-in-time drill: recovery to ${describeTarget(target)} from repo${repo} into scratch volume ${volume}`)
  await $({ timeoutMs: 60_000 })`docker volume create --label toogoodtogo.purpose=pitr-drill ${volume}`
  try {
    const started = Date.now()
    const output = (await ttgPitrDrill(p, volume, keyTableCountSql(ctx.cfg.KEY_TABLES), restoreTargetOptions(target, repo))).stdout.trim()
    const counts = isDryRun() ? new Map<string, number>() : checkCounts(output.split('\n').filter((l) => /^[^=\s]+=\d+$/.test(l)).join('\n'), ctx.cfg.KEY_TABLES)
    log.info(`Point-in-time drill passed in ${Math.round((Date.now() - started) / 1000)}s: ${describeCounts(counts)}`)
    return counts
  } finally {
    await $({ timeoutMs: 60_000 })`docker volume rm --force ${volume}`
  }
}
