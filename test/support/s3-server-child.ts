// Runs in its own node (with --openssl-legacy-provider: s3rver encrypts listing continuation tokens
// with DES, which OpenSSL 3 only has there) so a test can SIGKILL it mid-upload like a server that
// dies. s3rver is a real, file-backed S3 server; in front of it this file adds what it lacks and
// what the tests need: SigV4 signature checking (s3rver accepts any signature), the two multipart
// operations it does not implement (ListMultipartUploads, AbortMultipartUpload, on its own upload
// directories), and faults a test switches on for the next matching requests.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import fs from 'node:fs'
import https from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createRequire } from 'node:module'
import path from 'node:path'

export interface ChildConfig {
  host: string
  port: number
  directory: string
  keyFile: string
  certFile: string
  buckets: string[]
  /** access key id -> secret; the requests must be signed with these */
  credentials: Record<string, string>
  verifySignatures: boolean
}

interface Fault {
  method: string
  /** a substring of the request URL */
  match: string
  /** let this many matching requests through first */
  skip: number
  /** then fail this many */
  count: number
  status: number
  code: string
}

interface S3rverApp {
  configureBuckets(): Promise<void>
  callback(): (req: IncomingMessage, res: ServerResponse) => void
}
type S3rverClass = new (options: Record<string, unknown>) => S3rverApp
interface AccountModule {
  DUMMY_ACCOUNT: { createKeyPair(id: string, secret: string): void }
}

const config = JSON.parse(process.env.S3_TEST_SERVER ?? '{}') as ChildConfig
const require = createRequire(import.meta.url)
const S3rver = require('s3rver') as S3rverClass
const accounts = require('s3rver/lib/models/account.js') as AccountModule
for (const [id, secret] of Object.entries(config.credentials)) accounts.DUMMY_ACCOUNT.createKeyPair(id, secret)

const faults: Fault[] = []
const requestLog: string[] = []

const app = new S3rver({ directory: config.directory, silent: true, vhostBuckets: false, configureBuckets: config.buckets.map((name) => ({ name })) })
await app.configureBuckets()
const s3 = app.callback()

const server = https.createServer({ key: fs.readFileSync(config.keyFile), cert: fs.readFileSync(config.certFile) }, (req, res) => {
  const url = req.url ?? '/'
  if (url.startsWith('/__test/')) return control(req, res, url)
  requestLog.push(`${req.method} ${url} ${req.headers['x-amz-content-sha256'] ?? '-'} ${req.headers['content-encoding'] ?? '-'}`)
  if (requestLog.length > 2000) requestLog.shift()
  const fault = takeFault(req.method ?? 'GET', url)
  if (fault) return sendError(req, res, fault.status, fault.code, `Injected by the test: ${fault.code}`)
  if (config.verifySignatures) {
    const refused = checkSignature(req, config.credentials)
    if (refused) return sendError(req, res, 403, refused.code, refused.message)
  }
  const [pathname = '/', query = ''] = url.split('?')
  const params = new URLSearchParams(query)
  const [bucket = '', ...keyParts] = pathname.slice(1).split('/').filter(Boolean).map(decodeURIComponent)
  if (req.method === 'GET' && keyParts.length === 0 && params.has('uploads')) return listUploads(res, bucket, params.get('prefix') ?? '')
  const uploadId = params.get('uploadId')
  if (req.method === 'DELETE' && uploadId) return abortUpload(req, res, bucket, uploadId)
  s3(req, res)
})
server.listen(config.port, config.host, () => process.stdout.write(`listening ${config.port}\n`))
// The test process owns us: when it goes, so do we.
process.stdin.on('end', () => process.exit(0))
process.stdin.resume()

function takeFault(method: string, url: string): Fault | null {
  const fault = faults.find((f) => f.method === method && url.includes(f.match) && f.count > 0)
  if (!fault) return null
  if (fault.skip > 0) {
    fault.skip--
    return null
  }
  fault.count--
  return fault
}

function control(req: IncomingMessage, res: ServerResponse, url: string): void {
  if (url === '/__test/log') {
    res.setHeader('content-type', 'text/plain')
    res.end(requestLog.join('\n'))
    return
  }
  let body = ''
  req.on('data', (chunk: Buffer) => (body += chunk.toString()))
  req.on('end', () => {
    if (req.method === 'DELETE') faults.length = 0
    else faults.push(JSON.parse(body) as Fault)
    res.end('ok')
  })
}

// ---- SigV4, as S3 checks it (https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html)

const AUTH = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/

function checkSignature(req: IncomingMessage, credentials: Record<string, string>): { code: string; message: string } | null {
  const match = AUTH.exec(req.headers.authorization ?? '')
  if (!match) return { code: 'AccessDenied', message: 'Access Denied' }
  const [, accessKeyId = '', date = '', region = '', service = '', signedHeaders = '', signature = ''] = match
  const secret = credentials[accessKeyId]
  if (secret === undefined) return { code: 'InvalidAccessKeyId', message: 'The AWS Access Key Id you provided does not exist in our records.' }
  const url = req.url ?? '/'
  const queryAt = url.indexOf('?')
  const rawPath = queryAt < 0 ? url : url.slice(0, queryAt)
  const rawQuery = queryAt < 0 ? '' : url.slice(queryAt + 1)
  const canonicalRequest = [
    req.method,
    rawPath,
    canonicalQuery(rawQuery),
    signedHeaders.split(';').map((name) => `${name}:${headerValue(req, name)}\n`).join(''),
    signedHeaders,
    headerValue(req, 'x-amz-content-sha256') || 'UNSIGNED-PAYLOAD',
  ].join('\n')
  const scope = `${date}/${region}/${service}/aws4_request`
  const stringToSign = ['AWS4-HMAC-SHA256', headerValue(req, 'x-amz-date'), scope, createHash('sha256').update(canonicalRequest).digest('hex')].join('\n')
  let key: Buffer = hmac(`AWS4${secret}`, date)
  for (const part of [region, service, 'aws4_request']) key = hmac(key, part)
  const expected = hmac(key, stringToSign)
  const given = Buffer.from(signature, 'hex')
  if (given.length === expected.length && timingSafeEqual(given, expected)) return null
  return { code: 'SignatureDoesNotMatch', message: 'The request signature we calculated does not match the signature you provided. Check your key and signing method.' }
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest()
}

function headerValue(req: IncomingMessage, name: string): string {
  const value = req.headers[name]
  const text = Array.isArray(value) ? value.join(',') : (value ?? '')
  return text.trim().replace(/\s+/g, ' ')
}

function canonicalQuery(raw: string): string {
  return raw
    .split('&')
    .filter(Boolean)
    .map((pair) => {
      const eq = pair.indexOf('=')
      const name = eq < 0 ? pair : pair.slice(0, eq)
      const value = eq < 0 ? '' : pair.slice(eq + 1)
      return [uriEncode(decodeURIComponent(name)), uriEncode(decodeURIComponent(value))] as const
    })
    .sort(([a, av], [b, bv]) => (a < b ? -1 : a > b ? 1 : av < bv ? -1 : av > bv ? 1 : 0))
    .map(([name, value]) => `${name}=${value}`)
    .join('&')
}

function uriEncode(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)
}

// ---- the multipart operations s3rver lacks, on its own layout: <dir>/<bucket>/._S3rver_uploads/<id>/{key,metadata,<n>}

function uploadsDir(bucket: string): string {
  return path.join(config.directory, bucket, '._S3rver_uploads')
}

function listUploads(res: ServerResponse, bucket: string, prefix: string): void {
  const dir = uploadsDir(bucket)
  const entries = fs.existsSync(dir) ? fs.readdirSync(dir) : []
  const uploads = entries
    .map((id) => {
      const keyFile = path.join(dir, id, 'key')
      if (!fs.existsSync(keyFile)) return null
      return { id, key: fs.readFileSync(keyFile, 'utf8'), initiated: fs.statSync(keyFile).mtime }
    })
    .filter((u): u is { id: string; key: string; initiated: Date } => u !== null && u.key.startsWith(prefix))
  const xml = uploads
    .map((u) => `<Upload><Key>${escapeXml(u.key)}</Key><UploadId>${u.id}</UploadId><Initiated>${u.initiated.toISOString()}</Initiated><StorageClass>STANDARD</StorageClass></Upload>`)
    .join('')
  res.setHeader('content-type', 'application/xml')
  res.end(
    `<?xml version="1.0" encoding="UTF-8"?>\n<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${escapeXml(bucket)}</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker><Prefix>${escapeXml(prefix)}</Prefix><MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>${xml}</ListMultipartUploadsResult>`,
  )
}

function abortUpload(req: IncomingMessage, res: ServerResponse, bucket: string, uploadId: string): void {
  const dir = path.join(uploadsDir(bucket), path.basename(uploadId))
  if (!fs.existsSync(dir)) return sendError(req, res, 404, 'NoSuchUpload', 'The specified upload does not exist.')
  fs.rmSync(dir, { recursive: true, force: true })
  res.statusCode = 204
  res.end()
}

/** Answers only once the request body is read, as S3 does: a client still sending would see a reset, not the error. */
function sendError(req: IncomingMessage, res: ServerResponse, status: number, code: string, message: string): void {
  req.resume()
  req.once('end', () => {
    res.statusCode = status
    res.setHeader('content-type', 'application/xml')
    res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${escapeXml(message)}</Message><RequestId>test</RequestId></Error>`)
  })
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}
