import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { S3ServiceException } from '@aws-sdk/client-s3'
import { describe, expect, it } from 'vitest'
import type { BackupRecord } from '../../lib/db/backup-index.ts'
import { OffsiteError } from '../../lib/core/errors.ts'
import { Meter } from '../../lib/offsite/meter.ts'
import { offsiteFailure } from '../../lib/offsite/s3.ts'
import { buildSidecar, localRecordFrom, parseSidecar, SIDECAR_FORMAT } from '../../lib/offsite/sidecar.ts'
import { addSecret, clearSecretsForTests } from '../../lib/core/redact.ts'
import { discard } from '../../lib/core/streams.ts'

const record: BackupRecord = {
  backup_id: 'shop_20261201_030000',
  created_at: '2026-12-01T03:00:00Z',
  backup_type: 'scheduled',
  file_path: '/opt/backups/postgres/shop_20261201_030000.sql.gz',
  file_size_mb: 1,
  file_size_bytes: 1234,
  database_name: 'shop',
  pg_dump_version: '15.10',
  compressed: true,
  sha256: 'a'.repeat(64),
  row_counts: { 'public.users': 2000 },
  verified: true,
  verified_at: '2026-12-01T03:00:05Z',
  retention_until: '2026-12-08T03:00:00Z',
  artifact_id: null,
  reason: null,
  offsite: null,
  offsite_error: null,
  last_drill: null,
  snapshot: null,
  cluster_id: null,
} as BackupRecord

function sidecar() {
  return buildSidecar({
    key: 'toogoodtogo/shop_20261201_030000.sql.gz.age',
    uploadedAt: '2026-12-01T03:01:00Z',
    record,
    localFile: record.file_path,
    plaintext: { size: 1234, sha256: 'a'.repeat(64) },
    ciphertext: { size: 1500, sha256: 'b'.repeat(64) },
    recipient: 'age1eezeuwxtr03cevxr92894eta0ky4877y0d0595786s2ak5p5w5vqp077td',
  })
}

describe('the sidecar', () => {
  it('holds what a new droplet needs to list and verify the copy, and no local path', () => {
    const s = sidecar()
    expect(s).toMatchObject({
      format: SIDECAR_FORMAT,
      backup_id: 'shop_20261201_030000',
      created_at: '2026-12-01T03:00:00Z',
      backup_type: 'scheduled',
      database_name: 'shop',
      row_counts: { 'public.users': 2000 },
      file_name: 'shop_20261201_030000.sql.gz',
      plaintext: { size: 1234, sha256: 'a'.repeat(64) },
      ciphertext: { size: 1500, sha256: 'b'.repeat(64) },
      encryption: { scheme: 'age', recipient: expect.stringMatching(/^age1/) },
    })
    expect(JSON.stringify(s)).not.toContain('/opt/backups')
  })

  it('reads back what it wrote, and names what is wrong with anything else', () => {
    const s = sidecar()
    expect(parseSidecar('k.json', JSON.stringify(s))).toEqual(s)
    expect(() => parseSidecar('k.json', '{not json')).toThrow(/Sidecar k.json is not valid JSON/)
    const broken = { ...s, ciphertext: { size: 1500, sha256: 'nope' } }
    expect(() => parseSidecar('k.json', JSON.stringify(broken))).toThrow(/Sidecar k.json is invalid at ciphertext.sha256/)
  })

  it('gives back the index record with the path of the download', () => {
    const local = localRecordFrom(sidecar(), '/new/droplet/shop_20261201_030000.sql.gz')
    expect(local).toEqual({ ...record, file_path: '/new/droplet/shop_20261201_030000.sql.gz' })
  })
})

describe('Meter', () => {
  it('counts and hashes what passes, unchanged', async () => {
    const meter = new Meter()
    const data = Buffer.from('hello off-site world')
    await pipeline(Readable.from([data.subarray(0, 5), data.subarray(5)]), meter, discard())
    expect(meter.measured()).toEqual({ size: data.length, sha256: createHash('sha256').update(data).digest('hex') })
  })

  it('fails at the end, instead of ending, when the bytes are not the expected ones', async () => {
    const data = Buffer.from('hello')
    const meter = new Meter({ expect: { measured: { size: 5, sha256: 'c'.repeat(64) }, mismatch: (actual) => new Error(`got ${actual.size}`) } })
    await expect(pipeline(Readable.from([data]), meter, discard())).rejects.toThrow('got 5')
    const good = new Meter({ expect: { measured: { size: 5, sha256: createHash('sha256').update(data).digest('hex') }, mismatch: () => new Error('no') } })
    await expect(pipeline(Readable.from([data]), good, discard())).resolves.toBeUndefined()
  })

  it('holds its end until a last asynchronous check passes, and fails instead when it does not', async () => {
    let checked = false
    const late = new Meter({ beforeEnd: () => new Promise((resolve) => setTimeout(() => resolve((checked = true) && null), 20)) })
    await pipeline(Readable.from([Buffer.from('x')]), late, discard())
    expect(checked).toBe(true)
    const refused = new Meter({ beforeEnd: async () => new Error('the file changed') })
    await expect(pipeline(Readable.from([Buffer.from('x')]), refused, discard())).rejects.toThrow('the file changed')
  })
})

describe('offsiteFailure names the cause', () => {
  const context = { action: 'upload of p/x.sql.gz.age', settings: { endpoint: 'https://s3.example.com', bucket: 'ttg' } }
  const s3Error = (name: string, status: number) =>
    Object.assign(new S3ServiceException({ name, $fault: 'client', $metadata: { httpStatusCode: status }, message: `${name} from the server` }), { Code: name })
  const system = (code: string) => Object.assign(new Error(`connect ${code} 1.2.3.4:443`), { code, $metadata: { attempts: 3 } })

  it.each([
    [s3Error('SignatureDoesNotMatch', 403), 'credentials', 'OFFSITE_S3_SECRET_ACCESS_KEY'],
    [s3Error('InvalidAccessKeyId', 403), 'credentials', 'OFFSITE_S3_ACCESS_KEY_ID'],
    [s3Error('AccessDenied', 403), 'permission', 'OFFSITE_S3_ACCESS_KEY_ID'],
    [s3Error('NoSuchBucket', 404), 'no_bucket', 'OFFSITE_S3_BUCKET'],
    [s3Error('QuotaExceeded', 403), 'quota', null],
    [s3Error('XMinioStorageFull', 507), 'quota', null],
    [s3Error('InsufficientStorage', 507), 'quota', null],
    [s3Error('NoSuchKey', 404), 'not_found', null],
    [s3Error('InternalError', 500), 'server', null],
    [system('ECONNREFUSED'), 'network', 'OFFSITE_S3_ENDPOINT'],
    [system('ENOTFOUND'), 'network', 'OFFSITE_S3_ENDPOINT'],
    [system('DEPTH_ZERO_SELF_SIGNED_CERT'), 'tls', 'OFFSITE_S3_ENDPOINT'],
  ])('%s -> %s', (error, problem, variable) => {
    const failure = offsiteFailure(error, context)
    expect(failure).toBeInstanceOf(OffsiteError)
    expect(failure.problem).toBe(problem)
    expect(failure.variable).toBe(variable)
    expect(failure.message).toMatch(/^Off-site upload of p\/x.sql.gz.age failed: /)
  })

  it('calls a connection lost after bytes went across an interruption, not an unreachable server', () => {
    expect(offsiteFailure(system('ECONNRESET'), { ...context, midTransfer: true }).problem).toBe('interrupted')
    expect(offsiteFailure(system('ECONNREFUSED'), { ...context, midTransfer: true }).message).toContain('stopped answering in the middle of the transfer')
    expect(offsiteFailure(system('ECONNRESET'), context).problem).toBe('network')
  })

  it('finds the cause inside an AggregateError (both address families refused)', () => {
    const aggregate = new AggregateError([system('ECONNREFUSED'), system('ECONNREFUSED')], '')
    expect(offsiteFailure(aggregate, context).problem).toBe('network')
  })

  it('maps to the kinds restore.ts turns into exit codes', () => {
    expect(new OffsiteError('identity', 'x').kind).toBe('verify_failed')
    expect(new OffsiteError('verify', 'x').kind).toBe('verify_failed')
    expect(new OffsiteError('not_found', 'x').kind).toBe('not_found')
    expect(new OffsiteError('network', 'x').kind).toBe('connection')
  })

  it('quotes no secret even when a server echoes one in an error it makes up', () => {
    addSecret('Echoed-Secret-Value-42')
    const failure = offsiteFailure(s3Error('OddError', 400), context)
    failure.message.includes('OddError') || expect.fail(failure.message)
    expect(failure.message).not.toContain('Echoed-Secret-Value-42')
    expect(offsiteFailure(new Error('boom Echoed-Secret-Value-42'), context).message).toBe('Off-site upload of p/x.sql.gz.age failed: boom ***')
    clearSecretsForTests()
  })
})
