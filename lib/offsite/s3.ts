import http from 'node:http'
import https from 'node:https'
import { S3Client } from '@aws-sdk/client-s3'
import { log } from '../core/log.ts'
import { redact } from '../core/redact.ts'
import { OffsiteError, type OffsiteProblem } from '../core/errors.ts'
import type { OffsiteSettings } from '../core/offsite-config.ts'

export interface ClientOptions {
  /** PEM of a private CA (a test server's); public endpoints need none */
  ca?: string | Buffer
  maxAttempts?: number
}

/**
 * The one S3 client shape the toolkit uses. WHEN_REQUIRED: the SDK's newer default checksums
 * (CRC32 trailers in aws-chunked bodies) are refused or stored verbatim by S3-compatible stores;
 * the SigV4 payload hash of every part still lets the server check what it received.
 * Path-style: Spaces and self-hosted stores do not all resolve bucket subdomains.
 */
export function createS3Client(settings: OffsiteSettings, options: ClientOptions = {}): S3Client {
  // The SDK is pinned, so its multi-line notice that later releases need Node 22 says nothing an
  // operator can act on, and it would break the one-line format of the script's stderr.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
  const agentOptions = { keepAlive: true, maxSockets: 8 }
  return new S3Client({
    endpoint: settings.endpoint,
    region: settings.region,
    credentials: { accessKeyId: settings.accessKeyId, secretAccessKey: settings.secretAccessKey },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // A few quick retries ride out a blip; a server that stays away fails the copy in seconds,
    // not after the SDK's default backoff has kept a backup run waiting.
    maxAttempts: options.maxAttempts ?? 3,
    logger: sdkLogger,
    requestHandler: {
      connectionTimeout: 10_000,
      // no byte either way for a minute: the connection is dead, whatever TCP thinks
      socketTimeout: 60_000,
      httpsAgent: new https.Agent({ ...agentOptions, ...(options.ca ? { ca: options.ca } : {}) }),
      httpAgent: new http.Agent(agentOptions),
    },
  })
}

// The SDK's own remarks (a streamed part it will not retry: multipart.ts does) are for the log
// file, not the operator's terminal; the errors themselves are thrown and named.
const toLogFile = (...words: unknown[]) => log.debug(`S3 client: ${words.join(' ')}`)
const sdkLogger = { trace: () => undefined, debug: () => undefined, info: () => undefined, warn: toLogFile, error: toLogFile }

export interface FailureContext {
  /** what was being done, for the message: "upload of toogoodtogo/x.sql.gz.age" */
  action: string
  settings: Pick<OffsiteSettings, 'endpoint' | 'bucket'>
  /** the server had already answered: a network error now means it went away mid-transfer */
  midTransfer?: boolean
  /** what the failure leaves behind, said after an interruption ("nothing was kept as a good copy") */
  aftermath?: string
}

const NETWORK = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'ECONNRESET', 'EPIPE', 'ECONNABORTED', 'TimeoutError', 'RequestTimeout', 'ERR_STREAM_PREMATURE_CLOSE'])
const TLS = /^(CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|ERR_TLS_|ERR_SSL_)/
const QUOTA = new Set(['QuotaExceeded', 'XMinioStorageFull', 'XMinioAdminBucketQuotaExceeded', 'InsufficientStorage', 'StorageFull', 'EntityTooLarge'])
const SERVER_FAULT = new Set(['InternalError', 'ServiceUnavailable', 'SlowDown', 'NotImplemented'])

/** Turns whatever the SDK or the network threw into an OffsiteError that names the cause. */
export function offsiteFailure(error: unknown, context: FailureContext): OffsiteError {
  if (error instanceof OffsiteError) return error
  const { action, settings } = context
  const code = s3Code(error)
  const status = httpStatus(error)
  const system = systemCode(error)
  const said = redact(messageOf(error))
  const make = (problem: OffsiteProblem, message: string, variable?: string) =>
    new OffsiteError(problem, `Off-site ${action} failed: ${message}`, variable ? { cause: error, variable } : { cause: error })

  if (code === 'SignatureDoesNotMatch') {
    return make('credentials', 'the server refused the request signature: OFFSITE_S3_SECRET_ACCESS_KEY is not the secret of OFFSITE_S3_ACCESS_KEY_ID (SignatureDoesNotMatch)', 'OFFSITE_S3_SECRET_ACCESS_KEY')
  }
  if (code === 'InvalidAccessKeyId') {
    return make('credentials', 'the server does not know the access key in OFFSITE_S3_ACCESS_KEY_ID (InvalidAccessKeyId)', 'OFFSITE_S3_ACCESS_KEY_ID')
  }
  if (code === 'RequestTimeTooSkewed') return make('config', "this machine's clock differs too much from the server's; fix the time (timedatectl) (RequestTimeTooSkewed)")
  if (code === 'NoSuchBucket') {
    return make('no_bucket', `bucket ${JSON.stringify(settings.bucket)} does not exist at ${settings.endpoint}; check OFFSITE_S3_BUCKET (NoSuchBucket)`, 'OFFSITE_S3_BUCKET')
  }
  // before the 403s: Ceph (and so Spaces' peers) answers a full quota with 403 QuotaExceeded
  if ((code && QUOTA.has(code)) || status === 507) return make('quota', `the store refused the data: quota or space exhausted (${code ?? 'HTTP 507'})`)
  if (code === 'AccessDenied' || status === 403) {
    return make('permission', `access denied: the key in OFFSITE_S3_ACCESS_KEY_ID may not do this in bucket ${JSON.stringify(settings.bucket)} (${code ?? 'HTTP 403'})`, 'OFFSITE_S3_ACCESS_KEY_ID')
  }
  if (code === 'NoSuchKey' || code === 'NotFound' || status === 404) return make('not_found', `no such object (${code ?? 'HTTP 404'})`)
  if (system && TLS.test(system)) {
    return make('tls', `the certificate of OFFSITE_S3_ENDPOINT=${settings.endpoint} is not trusted (${system})`, 'OFFSITE_S3_ENDPOINT')
  }
  if ((system && NETWORK.has(system)) || code === 'TimeoutError' || code === 'RequestTimeout' || /socket hang up|aborted/i.test(said)) {
    const why = system ?? code ?? 'connection lost'
    if (context.midTransfer) return make('interrupted', `the server stopped answering in the middle of the transfer (${why})${context.aftermath ? `; ${context.aftermath}` : ''}`)
    return make('network', `cannot reach OFFSITE_S3_ENDPOINT=${settings.endpoint} (${why})`, 'OFFSITE_S3_ENDPOINT')
  }
  if ((code && SERVER_FAULT.has(code)) || (status !== undefined && status >= 500)) {
    return make('server', `the server failed: ${code ?? 'error'}${status ? ` (HTTP ${status})` : ''}`)
  }
  return make('server', `${code ? `${code}: ` : ''}${said || 'unknown error'}`)
}

/** The S3 error code (`NoSuchBucket`, ...) the SDK put in `name`, when the server sent one. */
function s3Code(error: unknown): string | undefined {
  if (!isObject(error)) return undefined
  const code = (error as { Code?: unknown }).Code ?? (httpStatus(error) !== undefined ? error.name : undefined)
  return typeof code === 'string' && code !== 'Error' && code !== 'UnknownError' ? code : undefined
}

function httpStatus(error: unknown): number | undefined {
  if (!isObject(error)) return undefined
  const status = (error as { $metadata?: { httpStatusCode?: unknown } }).$metadata?.httpStatusCode
  return typeof status === 'number' ? status : undefined
}

/** Node's errno-style code, looked for in the error, its cause and an AggregateError's members. */
function systemCode(error: unknown, depth = 0): string | undefined {
  if (!isObject(error) || depth > 4) return undefined
  const own = (error as { code?: unknown }).code
  if (typeof own === 'string') return own
  if (error.name === 'TimeoutError') return 'TimeoutError'
  for (const inner of [(error as { cause?: unknown }).cause, ...((error as { errors?: unknown[] }).errors ?? [])]) {
    const found = systemCode(inner, depth + 1)
    if (found) return found
  }
  return undefined
}

/** A failure worth one more try: the network, a timeout, the server's own error. */
export function isTransient(error: unknown): boolean {
  // classified as a first attempt would be: only the problem matters here, not the words
  const problem = offsiteFailure(error, { action: 'request', settings: { endpoint: '', bucket: '' } }).problem
  return (problem === 'network' || problem === 'server') && s3Code(error) !== 'NotImplemented'
}

function isObject(value: unknown): value is Error {
  return typeof value === 'object' && value !== null
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
