import crypto from 'node:crypto'
import path from 'node:path'
import { handOver } from './hand-over.ts'
import type { Config } from '../core/config.ts'
import type { Context } from '../stack/context.ts'
import { log } from '../core/log.ts'
import { ask, canPrompt } from '../core/prompt.ts'
import { ensurePostgresImage } from '../db/pitr-image.ts'
import { preparePitrRepoDir, takePhysicalBackups } from '../db/pitr.ts'

// Point-in-time recovery on a new droplet: off unless PITR_ENABLED=true is given (answers file,
// environment) or answered at the terminal. On, it gets repo1 under BACKUP_DIR and, with an
// off-site bucket, the password pgBackRest encrypts repo2 with; the first full base backup is
// taken once the stack runs.

/** The PITR answers, added to the values .env.production is written from. */
export async function collectPitr(v: Record<string, string>, backupDir: string): Promise<void> {
  if (v.PITR_ENABLED === undefined && canPrompt()) {
    const answer = await ask('Point-in-time recovery: archive PostgreSQL WAL continuously, so at most about a minute of writes is at risk instead of a day? (y/n)', { fallback: 'n', validate: (a) => (/^(y|yes|n|no)$/i.test(a) ? null : 'y or n') })
    v.PITR_ENABLED = /^y/i.test(answer) ? 'true' : 'false'
  }
  if (v.PITR_ENABLED !== 'true') {
    log.info('Point-in-time recovery: off; PITR_ENABLED=true turns it on (README: "Point-in-time recovery")')
    return
  }
  v.PITR_REPO_DIR ??= path.join(backupDir, 'pgbackrest')
  if (v.OFFSITE_S3_BUCKET && !v.PITR_CIPHER_PASSWORD) {
    v.PITR_CIPHER_PASSWORD = crypto.randomBytes(36).toString('base64url')
    log.info('Generated PITR_CIPHER_PASSWORD (in .env.production): keep a copy off the droplet with the age identity; without it the archive in the bucket cannot be read')
  }
  log.info(`Point-in-time recovery: on; WAL archived to ${v.PITR_REPO_DIR}${v.OFFSITE_S3_BUCKET ? ` and, encrypted, to bucket ${v.OFFSITE_S3_BUCKET}` : ''}`)
}

/** The postgres service's image (built here, never pulled) and, with PITR on, repo1 with its owner. */
export async function preparePostgres(cfg: Config): Promise<void> {
  await ensurePostgresImage(cfg.POSTGRES_IMAGE)
  if (cfg.PITR_ENABLED) await preparePitrRepoDir(cfg)
}

/** Without a base backup there is nothing to replay WAL onto: the first one now, owned by the deploy user like every state file. */
export async function firstBaseBackup(ctx: Context, owner: string): Promise<void> {
  if (!ctx.cfg.PITR_ENABLED) return
  await takePhysicalBackups(ctx, 'full')
  await handOver(owner, path.join(ctx.cfg.BACKUP_DIR, 'pitr_state.json'), 0o600)
}
