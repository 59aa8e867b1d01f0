import fs from 'node:fs'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { GetObjectCommand, type GetObjectCommandOutput } from '@aws-sdk/client-s3'
import { fsyncDir, fsyncFile } from '../core/atomic-file.ts'
import { messageOf, OffsiteError } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { isDryRun } from '../core/shell.ts'
import { CommandFailed, describeStages, runStages, type Stage } from '../core/runner.ts'
import { ageDecryptCommand, NO_IDENTITY_MATCHED } from '../commands/age.ts'
import { readSidecar, sidecarMismatch, type Bucket } from './bucket.ts'
import { identityFileFor } from './identity.ts'
import { macKeyFor, notAuthentic, sameMac, sidecarAuthenticity } from './mac.ts'
import { sidecarKey } from './keys.ts'
import { measureFile, Meter } from './meter.ts'
import { createS3Client, offsiteFailure } from './s3.ts'
import type { OffsiteSettings } from '../core/offsite-config.ts'
import { signedContentOf, type Sidecar } from './sidecar.ts'
import type { TransferOptions } from './upload.ts'

export interface DownloadOptions extends TransferOptions {
  /** replace a file already at the destination (a local copy that failed its checksum) */
  overwrite?: boolean
  /** accept a copy without a MAC (made before copies were authenticated); never one whose MAC is wrong */
  trustUnauthenticated?: boolean
}

export interface DownloadedBackup {
  file: string
  sidecar: Sidecar
}

const DEFAULT_TIMEOUT_MS = 6 * 3600_000

/**
 * Fetches one off-site copy into `destFile`. The sidecar must carry this droplet's MAC (the key
 * derived from the identity); the object streams through sha256 and the HMAC into
 * `<dest>.age.partial`, and must be the ciphertext the sidecar recorded and signed before
 * `age --decrypt` reads it and writes `<dest>.partial`; that is hashed (it must be the plaintext
 * the backup had), fsynced, and put in place only when it matches. Whatever fails, nothing is
 * left at `destFile`.
 */
export async function downloadBackup(settings: OffsiteSettings, key: string, destFile: string, options: DownloadOptions = {}): Promise<DownloadedBackup> {
  const bucket: Bucket = { client: options.client ?? createS3Client(settings), settings }
  const sidecar = await readSidecar(bucket, sidecarKey(key))
  if (!sidecar) throw new OffsiteError('not_found', `No off-site backup ${key} in bucket ${settings.bucket}: its sidecar ${sidecarKey(key)} is missing`)
  if (sidecar.key !== key) throw new OffsiteError('verify', `Sidecar ${sidecarKey(key)} describes ${sidecar.key}, not ${key}: the bucket was altered`)
  // Before a byte is downloaded: the wrong key would only fail after the whole transfer.
  const identity = await identityFileFor(settings.identityFile, sidecar.encryption.recipient, `Off-site backup ${sidecar.backup_id}`)
  const macKey = await macKeyFor(identity, sidecar.encryption.recipient)
  if (!macKey) throw new OffsiteError('identity', `BACKUP_AGE_IDENTITY_FILE=${identity} no longer holds the identity of ${sidecar.encryption.recipient}`, { variable: 'BACKUP_AGE_IDENTITY_FILE' })
  const authenticity = sidecarAuthenticity(sidecar, signedContentOf(sidecar), macKey)
  if (!authenticity.authentic) {
    if (!authenticity.legacy || !options.trustUnauthenticated) throw notAuthentic(key, authenticity.reason, authenticity.legacy ? `; if you know it is an older copy of yours, restore it by its id with --trust-unauthenticated` : '')
    log.warn(`Off-site backup ${key} is not authenticated (${authenticity.reason}); used as --trust-unauthenticated asks, checked against its sidecar's checksums only`)
  }
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

  // The ciphertext lands in a file first and is proven there (size, sha256, MAC): not a byte
  // reaches age before the whole object is known to be the one this droplet's key signed.
  // A .partial of either name is an earlier download that was interrupted: ours to replace. Both
  // are created here, owner-only (age would create its output world-readable).
  const encrypted = `${destFile}.age.partial`
  fs.rmSync(encrypted, { force: true })
  fs.rmSync(partial, { force: true })
  const sink = fs.createWriteStream(encrypted, { flags: 'wx', mode: 0o600 })
  try {
    const cipher = new Meter({ macKey, expect: { measured: sidecar.ciphertext, mismatch: () => altered(key, 'its sha256 is not the one recorded when it was uploaded') } })
    const received = await pipeline(body, cipher, sink).then(
      () => null,
      (error: unknown) => error,
    )
    if (received !== null) throw receiveFailure(key, settings, cipher, received)
    const expectedMac = sidecar.authentication?.ciphertext_mac
    if (expectedMac && !sameMac(cipher.measured().mac ?? '', expectedMac)) throw notAuthentic(key, 'its MAC does not match the one its sidecar records (replaced in the bucket)')
    fs.closeSync(fs.openSync(partial, 'wx', 0o600))
    const stages: Stage[] = [{ readFrom: encrypted }, decrypt]
    const decrypted = await runStages(stages, options.timeoutMs ?? DEFAULT_TIMEOUT_MS).then(
      () => null,
      (error: unknown) => error,
    )
    if (decrypted !== null) throw decryptFailure(key, sidecar, decrypted)
  } catch (error) {
    fs.rmSync(partial, { force: true })
    throw error
  } finally {
    // The file is opened asynchronously: a pipeline that failed early can see it created after
    // its rejection, so it is removed once the stream has closed, not before.
    if (!sink.closed) await new Promise<void>((resolve) => sink.once('close', () => resolve()).destroy())
    fs.rmSync(encrypted, { force: true })
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

/** The download's first cause: the checksum the Meter found wrong, else the transfer's own error. */
function receiveFailure(key: string, settings: OffsiteSettings, cipher: Meter, reason: unknown): OffsiteError {
  if (cipher.errored instanceof OffsiteError) return cipher.errored
  if (reason instanceof OffsiteError) return reason
  // A file that cannot be written (ENOSPC, EACCES) is this droplet's; anything else, the transfer's.
  if (isSystemError(reason)) return new OffsiteError('local', `Off-site download of ${key} failed: ${messageOf(reason)}`, { cause: reason })
  return offsiteFailure(reason, { action: `download of ${key}`, settings, midTransfer: true })
}

function decryptFailure(key: string, sidecar: Sidecar, reason: unknown): OffsiteError {
  if (reason instanceof CommandFailed) {
    if (NO_IDENTITY_MATCHED.test(reason.message)) {
      return new OffsiteError('identity', `BACKUP_AGE_IDENTITY_FILE cannot decrypt ${key}: it was encrypted for ${sidecar.encryption.recipient}`, { cause: reason, variable: 'BACKUP_AGE_IDENTITY_FILE' })
    }
    // age authenticates every 64 KiB: it stops at the first altered chunk.
    return altered(key, `age refused it (${reason.message})`)
  }
  if (reason instanceof OffsiteError) return reason
  return new OffsiteError('local', `Decrypting the off-site download of ${key} failed: ${messageOf(reason)}`, { cause: reason })
}

const WRITE_ERRORS = new Set(['ENOSPC', 'EDQUOT', 'EACCES', 'EPERM', 'EROFS', 'EEXIST', 'EIO'])

function isSystemError(error: unknown): boolean {
  return WRITE_ERRORS.has((error as NodeJS.ErrnoException | null)?.code ?? '')
}
