import type { ProcessPromise } from 'zx'
import { composeBase, composeEnv, type ComposeProject } from './compose.ts'
import { $, $read, type ShellOptions } from '../core/shell.ts'
import { dayjs } from '../core/time.ts'

// pgBackRest runs inside the postgres service (deployment/postgres), as the server's own user,
// reading the configuration its entrypoint wrote. One stanza: the droplet has one cluster.
export const STANZA = 'main'
export type RepoNumber = 1 | 2
export type PhysicalBackupType = 'full' | 'diff'

/** The scratch volume a drill restores into, mounted where ttg-pitr expects it. */
export const DRILL_MOUNT = '/var/lib/postgresql/drill'

/** `$`'s options, and `read` for a command that only reads (`$read`: it runs under --dry-run too). */
type RunOptions = ShellOptions & { read?: boolean }

/** pgBackRest in the running postgres service, as the server's user: `await pgbackrest(p, ['check'])`. */
export function pgbackrest(p: ComposeProject, args: string[], options: RunOptions = {}): ProcessPromise {
  const { read, ...shell } = options
  return (read ? $read : $)({ env: composeEnv(p), ...shell })`${composeBase(p)} exec -T --user postgres postgres pgbackrest --stanza=${STANZA} ${args}`
}

/** Idempotent: creates the stanza, or checks that the one there belongs to this cluster. */
export function stanzaCreate(p: ComposeProject, options: ShellOptions = {}): ProcessPromise {
  return pgbackrest(p, ['stanza-create'], { timeoutMs: 5 * 60_000, ...options })
}

/** In a one-off container: it answers whether the server runs or its container is gone. */
export function pgbackrestInfo(p: ComposeProject): ProcessPromise {
  return postgresOneOff(p, ['pgbackrest', `--stanza=${STANZA}`, '--output=json', 'info'], { timeoutMs: 2 * 60_000, read: true })
}

/** A one-off container of the postgres service (its image, volumes and environment), the server itself stopped or gone. */
function postgresOneOff(p: ComposeProject, argv: string[], options: RunOptions & { volumes?: string[] } = {}): ProcessPromise {
  const { read, volumes = [], ...shell } = options
  const mounts = volumes.flatMap((v) => ['--volume', v])
  return (read ? $read : $)({ env: composeEnv(p), ...shell })`${composeBase(p)} run --rm --no-deps -T --user postgres ${mounts} postgres ${argv}`
}

/**
 * The restore options for a target: the end of the archive (`latest`), or a moment, after which
 * the server promotes itself (pgBackRest's default target action would pause it, read-only).
 */
export function restoreTargetOptions(target: Date | 'latest', repo: RepoNumber): string[] {
  const where = [`--repo=${repo}`]
  if (target === 'latest') return [...where, '--type=default']
  return [...where, '--type=time', `--target=${dayjs.utc(target).format('YYYY-MM-DD HH:mm:ss.SSS[+00]')}`, '--target-action=promote']
}

export function ttgPitrRestore(p: ComposeProject, options: string[], shell: ShellOptions = {}): ProcessPromise {
  return postgresOneOff(p, ['ttg-pitr', 'restore', ...options], { timeoutMs: 6 * 60 * 60_000, ...shell })
}

export function ttgPitrPutBack(p: ComposeProject): ProcessPromise {
  return postgresOneOff(p, ['ttg-pitr', 'put-back'], { timeoutMs: 30 * 60_000 })
}

export function ttgPitrDiscard(p: ComposeProject): ProcessPromise {
  return postgresOneOff(p, ['ttg-pitr', 'discard'], { timeoutMs: 30 * 60_000 })
}

export function ttgPitrDrill(p: ComposeProject, scratchVolume: string, sql: string, options: string[]): ProcessPromise {
  return postgresOneOff(p, ['ttg-pitr', 'drill', '5433', sql, ...options], { timeoutMs: 6 * 60 * 60_000, volumes: [`${scratchVolume}:${DRILL_MOUNT}`] })
}
