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

// What went wrong with the off-site copy, in the operator's terms. `kind` (inherited) is what
// restore.ts already maps to exit codes: a wrong key or an altered object is `verify_failed` (exit
// 2), an id the bucket does not hold is `not_found` (exit 2). backup.ts maps every OffsiteError to
// its own exit 4: the local backup is fine, only the copy failed.
export type OffsiteProblem =
  | 'config' // a setting is missing or malformed
  | 'network' // the endpoint cannot be reached at all
  | 'tls' // the endpoint's certificate is not trusted
  | 'credentials' // the server refused the key id or the signature
  | 'permission' // the key is valid but may not do this
  | 'no_bucket' // OFFSITE_S3_BUCKET does not exist
  | 'quota' // the store is full or the account over its quota
  | 'interrupted' // the server went away in the middle of a transfer
  | 'server' // the server answered with an error of its own
  | 'not_found' // no such backup in the bucket
  | 'verify' // what came back is not what was sent
  | 'identity' // the age identity cannot decrypt this backup
  | 'local' // the local file is not the one the index describes

const KIND: Record<OffsiteProblem, ErrorKind> = {
  config: 'config',
  network: 'connection',
  tls: 'connection',
  credentials: 'config',
  permission: 'config',
  no_bucket: 'config',
  quota: 'command_failed',
  interrupted: 'command_failed',
  server: 'command_failed',
  not_found: 'not_found',
  verify: 'verify_failed',
  identity: 'verify_failed',
  local: 'verify_failed',
}

export class OffsiteError extends OpsError {
  constructor(
    readonly problem: OffsiteProblem,
    message: string,
    options: { cause?: unknown; variable?: string } = {},
  ) {
    super(KIND[problem], message, options.cause === undefined ? {} : { cause: options.cause })
    this.name = 'OffsiteError'
    this.variable = options.variable ?? null
  }

  /** the setting the operator should look at, when one is to blame */
  readonly variable: string | null
}
