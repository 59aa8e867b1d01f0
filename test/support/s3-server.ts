import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import https from 'node:https'
import os from 'node:os'
import path from 'node:path'
import type { S3Client } from '@aws-sdk/client-s3'
import { createS3Client } from '../../lib/offsite/s3.ts'
import type { OffsiteSettings } from '../../lib/core/offsite-config.ts'
import { freePort } from './pg-cluster.ts'
import type { ChildConfig } from './s3-server-child.ts'
import { ROOT } from './scripts.ts'

// A real S3 protocol server for the tests: s3rver over HTTPS with a certificate openssl made for
// this run, on 127.0.0.1 and a free port, its objects in a temp directory. It runs as a child
// process (test/support/s3-server-child.ts) so a test can kill it mid-upload and start it again on
// the same port and data, like a server that crashed and came back.
export interface S3TestServer {
  endpoint: string
  port: number
  /** s3rver's data directory: <root>/<bucket>/<key>._S3rver_object */
  root: string
  bucket: string
  /** the self-signed certificate, PEM: the SDK's CA (or NODE_EXTRA_CA_CERTS for a child) */
  ca: string
  caFile: string
  accessKeyId: string
  secretAccessKey: string
  /** OFFSITE_* variables pointing at this server (plus any given) */
  env(extra?: Record<string, string>): Record<string, string>
  /** an S3 client for these settings that trusts this server's certificate */
  client(settings: OffsiteSettings): S3Client
  objectFile(key: string): string
  uploadsDir(): string
  /** parts of unfinished multipart uploads the server holds now */
  partsUploaded(): number
  /** the next matching requests fail with this S3 error */
  injectFault(fault: { method: string; match: string; skip?: number; count?: number; status?: number; code?: string }): Promise<void>
  clearFaults(): Promise<void>
  /** one line per request: method, URL, x-amz-content-sha256, content-encoding */
  requestLog(): Promise<string[]>
  /** SIGKILL, as a crash: no response is finished, nothing is flushed */
  kill(): Promise<void>
  start(): Promise<void>
  stop(): Promise<void>
}

/**
 * `host`: the address it listens on, 127.0.0.1 unless a container must reach it (the docker
 * bridge's gateway: pgBackRest in the postgres service); the certificate names it.
 */
export async function startS3Server(options: { bucket?: string; verifySignatures?: boolean; host?: string } = {}): Promise<S3TestServer> {
  const host = options.host ?? '127.0.0.1'
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-s3-'))
  const keyFile = path.join(dir, 'key.pem')
  const certFile = path.join(dir, 'cert.pem')
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-keyout', keyFile, '-out', certFile, '-subj', `/CN=${host}`, '-addext', `subjectAltName=IP:${host},DNS:localhost`,
  ], { stdio: 'ignore' })
  const ca = fs.readFileSync(certFile, 'utf8')
  const root = path.join(dir, 'data')
  fs.mkdirSync(root)
  const bucket = options.bucket ?? 'ttg-offsite'
  const accessKeyId = 'TTGTESTKEY'
  const secretAccessKey = `test-secret-${Math.random().toString(36).slice(2, 12)}`
  const port = await freePort()
  const config: ChildConfig = { host, port, directory: root, keyFile, certFile, buckets: [bucket], credentials: { [accessKeyId]: secretAccessKey }, verifySignatures: options.verifySignatures ?? true }
  const endpoint = `https://${host}:${port}`
  let child: ChildProcess | null = null

  const control = (method: string, route: string, body = ''): Promise<string> =>
    new Promise((resolve, reject) => {
      const req = https.request(`${endpoint}${route}`, { method, ca }, (res) => {
        let text = ''
        res.on('data', (chunk: Buffer) => (text += chunk.toString()))
        res.on('end', () => resolve(text))
      })
      req.on('error', reject)
      req.end(body)
    })

  const server: S3TestServer = {
    endpoint,
    port,
    root,
    bucket,
    ca,
    caFile: certFile,
    accessKeyId,
    secretAccessKey,
    env: (extra = {}) => ({
      OFFSITE_S3_ENDPOINT: endpoint,
      OFFSITE_S3_REGION: 'us-east-1',
      OFFSITE_S3_BUCKET: bucket,
      OFFSITE_S3_ACCESS_KEY_ID: accessKeyId,
      OFFSITE_S3_SECRET_ACCESS_KEY: secretAccessKey,
      ...extra,
    }),
    client: (settings) => createS3Client(settings, { ca }),
    objectFile: (key) => path.join(root, bucket, `${key}._S3rver_object`),
    uploadsDir: () => path.join(root, bucket, '._S3rver_uploads'),
    partsUploaded() {
      const dir = path.join(root, bucket, '._S3rver_uploads')
      if (!fs.existsSync(dir)) return 0
      return fs.readdirSync(dir).reduce((n, id) => n + fs.readdirSync(path.join(dir, id)).filter((f) => /^\d+$/.test(f)).length, 0)
    },
    injectFault: async (fault) => void (await control('POST', '/__test/faults', JSON.stringify({ skip: 0, count: 1, status: 500, code: 'InternalError', ...fault }))),
    clearFaults: async () => void (await control('DELETE', '/__test/faults')),
    requestLog: async () => (await control('GET', '/__test/log')).split('\n').filter(Boolean),
    async kill() {
      const running = child
      child = null
      if (!running || running.exitCode !== null) return
      const exited = new Promise((resolve) => running.once('exit', resolve))
      running.kill('SIGKILL')
      await exited
    },
    async start() {
      if (child) return
      child = await spawnChild(config)
    },
    async stop() {
      await server.kill()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
  await server.start()
  return server
}

function spawnChild(config: ChildConfig): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--openssl-legacy-provider', '--import', 'tsx', path.join(ROOT, 'test/support/s3-server-child.ts')], {
    cwd: ROOT,
    env: { ...process.env, S3_TEST_SERVER: JSON.stringify(config) },
    stdio: ['pipe', 'pipe', 'pipe'],
  })
  return new Promise((resolve, reject) => {
    let stderr = ''
    const timer = setTimeout(() => fail(new Error(`s3rver did not start within 20s: ${stderr}`)), 20_000)
    const fail = (error: Error) => {
      clearTimeout(timer)
      child.kill('SIGKILL')
      reject(error)
    }
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('listening')) {
        clearTimeout(timer)
        resolve(child)
      }
    })
    child.once('exit', (code) => fail(new Error(`s3rver exited (${code}) before listening: ${stderr}`)))
  })
}
