import { createHash } from 'node:crypto'
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3'
import type { ListedObject } from './keys.ts'
import { offsiteFailure } from './s3.ts'
import type { OffsiteSettings } from '../core/offsite-config.ts'
import { parseSidecar, type Sidecar } from './sidecar.ts'

// The few S3 operations the toolkit makes, each turning a failure into an OffsiteError that names
// its cause. Deletes are one key at a time: a failure then says exactly what was and was not deleted.

export interface Bucket {
  client: S3Client
  settings: OffsiteSettings
}

export async function readSidecar(bucket: Bucket, key: string): Promise<Sidecar | null> {
  let text: string
  try {
    const response = await bucket.client.send(new GetObjectCommand({ Bucket: bucket.settings.bucket, Key: key }))
    text = (await response.Body?.transformToString('utf8')) ?? ''
  } catch (error) {
    const failure = offsiteFailure(error, { action: `read of ${key}`, settings: bucket.settings })
    if (failure.problem === 'not_found') return null
    throw failure
  }
  return parseSidecar(key, text)
}

export async function writeSidecar(bucket: Bucket, sidecar: Sidecar, key: string): Promise<void> {
  const body = JSON.stringify(sidecar, null, 2) + '\n'
  try {
    await bucket.client.send(
      new PutObjectCommand({
        Bucket: bucket.settings.bucket,
        Key: key,
        Body: body,
        ContentType: 'application/json',
        // the server refuses a body that does not match (BadDigest): no torn sidecar is stored
        ContentMD5: createHash('md5').update(body).digest('base64'),
      }),
    )
  } catch (error) {
    throw offsiteFailure(error, { action: `write of ${key}`, settings: bucket.settings })
  }
}

export interface Head {
  size: number
  metadata: Record<string, string>
}

export async function headObject(bucket: Bucket, key: string): Promise<Head | null> {
  try {
    const head = await bucket.client.send(new HeadObjectCommand({ Bucket: bucket.settings.bucket, Key: key }))
    return { size: head.ContentLength ?? -1, metadata: head.Metadata ?? {} }
  } catch (error) {
    const failure = offsiteFailure(error, { action: `check of ${key}`, settings: bucket.settings })
    if (failure.problem === 'not_found') return null
    throw failure
  }
}

export async function deleteObject(bucket: Bucket, key: string): Promise<void> {
  try {
    await bucket.client.send(new DeleteObjectCommand({ Bucket: bucket.settings.bucket, Key: key }))
  } catch (error) {
    throw offsiteFailure(error, { action: `delete of ${key}`, settings: bucket.settings })
  }
}

/** Every object under the prefix, page by page; one failed page fails the whole listing. */
export async function listObjects(bucket: Bucket, pageSize = 1000): Promise<ListedObject[]> {
  const objects: ListedObject[] = []
  let token: string | undefined
  do {
    try {
      const page = await bucket.client.send(
        new ListObjectsV2Command({ Bucket: bucket.settings.bucket, Prefix: bucket.settings.prefix, MaxKeys: pageSize, ContinuationToken: token }),
      )
      for (const item of page.Contents ?? []) {
        if (item.Key) objects.push({ key: item.Key, size: item.Size ?? 0, lastModified: item.LastModified ?? new Date(0) })
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined
    } catch (error) {
      throw offsiteFailure(error, { action: `listing of ${bucket.settings.bucket}/${bucket.settings.prefix}`, settings: bucket.settings })
    }
  } while (token)
  return objects
}

export interface PendingUpload {
  key: string
  uploadId: string
  initiated: Date
}

/** Multipart uploads started under the prefix and never completed or aborted. */
export async function listUploads(bucket: Bucket): Promise<PendingUpload[]> {
  const uploads: PendingUpload[] = []
  let keyMarker: string | undefined
  let uploadIdMarker: string | undefined
  do {
    try {
      const page = await bucket.client.send(
        new ListMultipartUploadsCommand({ Bucket: bucket.settings.bucket, Prefix: bucket.settings.prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
      )
      for (const upload of page.Uploads ?? []) {
        if (upload.Key && upload.UploadId) uploads.push({ key: upload.Key, uploadId: upload.UploadId, initiated: upload.Initiated ?? new Date(0) })
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined
    } catch (error) {
      throw offsiteFailure(error, { action: `listing of incomplete uploads in ${bucket.settings.bucket}/${bucket.settings.prefix}`, settings: bucket.settings })
    }
  } while (keyMarker)
  return uploads
}

export async function abortUpload(bucket: Bucket, upload: PendingUpload): Promise<void> {
  try {
    await bucket.client.send(new AbortMultipartUploadCommand({ Bucket: bucket.settings.bucket, Key: upload.key, UploadId: upload.uploadId }))
  } catch (error) {
    const failure = offsiteFailure(error, { action: `abort of the incomplete upload of ${upload.key}`, settings: bucket.settings })
    // NoSuchUpload: it finished or was aborted meanwhile, which is what we wanted
    if (failure.problem !== 'not_found') throw failure
  }
}

/** A sidecar that does not describe the object beside it is not a good copy, whatever it says. */
export function sidecarMismatch(sidecar: Sidecar, data: ListedObject | Head, dataKey: string): string | null {
  if (sidecar.key !== dataKey) return `the sidecar describes ${sidecar.key}`
  if (sidecar.ciphertext.size !== data.size) return `the object has ${data.size} bytes, its sidecar says ${sidecar.ciphertext.size}`
  return null
}
