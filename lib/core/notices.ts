import type { ParsedCli } from './cli.ts'
import { OpsError } from './errors.ts'
import type { FailureNotice } from './main.ts'

// What each script's failure leaves behind, for the notification runMain sends (issue 22): the
// operator reads what state things are in before opening a terminal. One screen, so that the
// messages agree with each other; each script passes its own to runMain as `failureNotice`.

function kindOf(error: unknown): string | null {
  return error instanceof OpsError ? error.kind : null
}

/** backup.ts: exit 4's parts (off-site copy, retention, base backup) were each told where they failed. */
export function backupNotice(error: unknown, cli: ParsedCli): FailureNotice | null {
  if (kindOf(error) === 'backup_failed') return null
  if (cli.values.verify === true) return { state: 'Each backup that failed is marked failed in backup_index.json.', look: 'backup.sh --list' }
  if (cli.values.physical === true) return { state: 'No new base backup was made; the earlier ones and the WAL archive are untouched.' }
  return { state: 'No new backup was made; the earlier backups are untouched (backup.sh --list).' }
}

/** restore.ts: a drill never touches the live database; a restore says in its error what it left. */
export function restoreNotice(error: unknown, cli: ParsedCli): FailureNotice | null {
  if (cli.values.drill === true) return { state: 'The live database was not touched; the failed drill is recorded as last_drill in backup_index.json.', look: 'backup.sh --list' }
  const untouched = ['not_found', 'verify_failed', 'connection', 'disk_space', 'config', 'locked']
  if (untouched.includes(kindOf(error) ?? '')) return { state: 'Nothing was changed: the live database is as it was.' }
  return {}
}

/** rollback.ts: what runs now is the question after a failed rollback. */
export function rollbackNotice(error: unknown): FailureNotice | null {
  const untouched = ['target_not_found', 'config', 'locked']
  if (untouched.includes(kindOf(error) ?? '')) return { state: 'Nothing was changed: the running version is as it was.', look: 'status.sh' }
  return { state: 'The rollback did not complete: what runs now is not what was asked for.', look: 'status.sh' }
}
