import fs from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { GetObjectCommand, type GetObjectCommandOutput } from '@aws-sdk/client-s3'
import { fsyncDir, fsyncFile } from '../core/atomic-file.ts'
import { messageOf } from '../core/errors.ts'
import { CommandFailed, describeStages, isDryRun, runStages, type Stage } from '../core/runner.ts'
import { ageDecryptCommand, NO_IDENTITY_MATCHED } from './age.ts'
import { readSidecar, sidecarMismatch, type Bucket } from './bucket.ts'
import { OffsiteError } from './errors.ts'
import { identityFileFor } from './identity.ts'
import { sidecarKey } from './keys.ts'
import { measureFile, Meter } from './meter.ts'
import { createS3Client, offsiteFailure } from './s3.ts'
import type { OffsiteSettings } from './settings.ts'
import type { Sidecar } from './sidecar.ts'
import type { TransferOptions } from './upload.ts'

export interface DownloadOptions extends TransferOptions {
  /** replace a file already at the destination (a local copy that failed its checksum) */
  overwrite?: boolean
}

export interface DownloadedBackup {
  file: string
  sidecar: Sidecar
}

const DEFAULT_TIMEOUT_MS = 6 * 3600_000

/**
 * Fetches one off-site copy into `destFile`: the object streams through sha256 (it must be the
 * ciphertext the sidecar recorded) into `age --decrypt`, which writes `<dest>.partial`; that is
 * hashed (it must be the plaintext the backup had), fsynced, and put in place only when both
 * match. Whatever fails, nothing is left at `destFile`.
 */
export async function downloadBackup(settings: OffsiteSettings, key: string, destFile: string, options: DownloadOptions = {}): Promise<DownloadedBackup> {
  const bucket: Bucket = { client: options.client ?? createS3Client(settings), settings }
  const sidecar = await readSidecar(bucket, sidecarKey(key))
  if (!sidecar) throw new OffsiteError('not_found', `No off-site backup ${key} in bucket ${settings.bucket}: its sidecar ${sidecarKey(key)} is missing`)
  if (sidecar.key !== key) throw new OffsiteError('verify', `Sidecar ${sidecarKey(key)} describes ${sidecar.key}, not ${key}: the bucket was altered`)
  // Before a byte is downloaded: the wrong key would only fail after the whole transfer.
  const identity = await identityFileFor(settings.identityFile, sidecar.encryption.recipient, `Off-site backup ${sidecar.backup_id}`)
  if (!options.overwrite && fs.existsSync(destFile)) throw new OffsiteError('local', `${destFile} already exists; not overwritten`)
  const partial = `${destFile}.partial`
  const decrypt = ageDecryptCommand(identity, partial)
  if (isDryRun()) {
    process.stdout.write(`[dry-run] download ${settings.bucket}/${key} | ${describeStages([decrypt])}, then rename to ${destFile}\n`)
    return { file: destFile, sidecar }
  }
  let response: GetObjectCommandOutput
  try {
    response = await bucket.client.send(new GetObjectCommand({ Bucket: settings.bucket, Key: key }))
  } catch (error) {
    throw offsiteFailure(error, { action: `download of ${key}`, settings })
  }
  const body = response.Body
  if (!(body instanceof Readable)) throw new OffsiteError('server', `Off-site download of ${key} returned no body`)
  const mismatch = sidecarMismatch(sidecar, { size: response.ContentLength ?? -1, metadata: {} }, key)
  if (mismatch) {
    body.destroy()
    throw altered(key, mismatch)
  }

  // A .partial of this name is an earlier download that was interrupted: ours to replace. It is
  // created here, owner-only, for age to write into (age would create it world-readable).
  fs.rmSync(partial, { force: true })
  fs.closeSync(fs.openSync(partial, 'wx', 0o600))
  const cipher = new Meter({ expect: { measured: sidecar.ciphertext, mismatch: () => altered(key, 'its sha256 is not the one recorded when it was uploaded') } })
  const receiving = pipeline(body, cipher)
  const stages: Stage[] = [cipher, decrypt]
  const [received, decrypted] = await Promise.allSettled([receiving, runStages(stages, options.timeoutMs ?? DEFAULT_TIMEOUT_MS)])
  if (received.status === 'rejected' || decrypted.status === 'rejected') {
    fs.rmSync(partial, { force: true })
    throw downloadFailure({ key, settings, sidecar, cipher, received, decrypted })
  }
  // age wrote the plaintext itself (it never crossed node); read back from the page cache, it must
  // be the backup that was uploaded, byte for byte.
  const plaintext = await measureFile(partial)
  if (plaintext.size !== sidecar.plaintext.size || plaintext.sha256 !== sidecar.plaintext.sha256) {
    fs.rmSync(partial, { force: true })
    throw new OffsiteError('verify', `Off-site backup ${key} decrypted to ${plaintext.size} bytes with another sha256 than the backup had: not used`)
  }
  fsyncFile(partial)
  try {
    if (options.overwrite) fs.renameSync(partial, destFile)
    else {
      // link(2) cannot replace a file that appeared meanwhile; rename(2) would.
      fs.linkSync(partial, destFile)
      fs.unlinkSync(partial)
    }
  } catch (error) {
    fs.rmSync(partial, { force: true })
    throw new OffsiteError('local', `Cannot put the download in place at ${destFile}: ${messageOf(error)}`, { cause: error })
  }
  fsyncDir(path.dirname(destFile))
  return { file: destFile, sidecar }
}

function altered(key: string, detail: string): OffsiteError {
  return new OffsiteError('verify', `Off-site backup ${key} was altered or damaged in the bucket: ${detail}; not used`)
}

/** The first cause, not the pipe breaking it left behind in the other stages. */
function downloadFailure(state: {
  key: string
  settings: OffsiteSettings
  sidecar: Sidecar
  cipher: Meter
  received: PromiseSettledResult<void>
  decrypted: PromiseSettledResult<void>
}): OffsiteError {
  const { key, settings, sidecar, cipher, received, decrypted } = state
  // The ciphertext's checksum is the first evidence: when it is wrong, age's complaint only
  // follows from it.
  if (cipher.errored instanceof OffsiteError) return cipher.errored
  if (received.status === 'rejected' && !isPrematureClose(received.reason)) {
    return offsiteFailure(received.reason, { action: `download of ${key}`, settings, midTransfer: true })
  }
  const reason = decrypted.status === 'rejected' ? decrypted.reason : received.status === 'rejected' ? received.reason : null
  if (reason instanceof CommandFailed) {
    if (NO_IDENTITY_MATCHED.test(reason.message)) {
      return new OffsiteError('identity', `BACKUP_AGE_IDENTITY_FILE cannot decrypt ${key}: it was encrypted for ${sidecar.encryption.recipient}`, { cause: reason, variable: 'BACKUP_AGE_IDENTITY_FILE' })
    }
    // age authenticates every 64 KiB: it stops at the first altered chunk, before the checksum could.
    return altered(key, `age refused it (${reason.message})`)
  }
  if (reason instanceof OffsiteError) return reason
  return new OffsiteError('local', `Off-site download of ${key} failed: ${messageOf(reason)}`, { cause: reason })
}

function isPrematureClose(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | null)?.code === 'ERR_STREAM_PREMATURE_CLOSE'
}
