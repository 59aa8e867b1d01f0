// One error type whose `kind` says what went wrong; each script maps kinds to its own contract exit
// codes (a full disk is exit 3 for backup.ts but exit 1 for restore.ts's safety backup).
export type ErrorKind =
  | 'usage'
  | 'config'
  | 'disk_space'
  | 'dump_failed'
  | 'verify_failed'
  | 'not_found'
  | 'connection'
  | 'restore_failed'
  | 'refused'
  | 'locked'
  | 'corrupt_state'
  | 'command_failed'
  | 'timeout'
  | 'backup_failed'
  | 'migration_failed'
  | 'health_failed'
  | 'target_not_found'

export class OpsError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: { cause?: unknown; alreadyLogged?: boolean; alreadyNotified?: boolean },
  ) {
    super(message, options)
    this.name = 'OpsError'
    this.alreadyLogged = options?.alreadyLogged ?? false
    this.alreadyNotified = options?.alreadyNotified ?? false
  }

  /** the script has already told the story line by line; the top level adds only its last line */
  readonly alreadyLogged: boolean
  /** the script has already sent the notification for this failure; runMain sends none */
  readonly alreadyNotified: boolean
}

export type ExitCodes = Partial<Record<ErrorKind, number>>

export function exitCodeFor(error: unknown, codes: ExitCodes): number {
  if (error instanceof OpsError) return codes[error.kind] ?? 1
  return 1
}

export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
