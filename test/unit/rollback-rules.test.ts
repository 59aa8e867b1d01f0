import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import type { BackupRecord } from '../../lib/db/backup-index.ts'
import { OpsError } from '../../lib/core/errors.ts'
import { artifactSchema, eventSchema, newEvent, readEvents, readState } from '../../lib/release/deploy-state.ts'
import { parseImageFacts } from '../../lib/release/release.ts'
import { planDatabase, preDeploymentBackupOf, type DbFacts } from '../../lib/release/rollback.ts'
import { parseMemUsage, parseStats } from '../../lib/release/resources.ts'

// The one rollback's rules (code only, or code and data), and the records it writes staying
// readable next to the ones written before them.
function backup(id: string, over: Partial<BackupRecord> = {}): BackupRecord {
  return {
    backup_id: id, created_at: '2026-12-01T03:00:00Z', backup_type: 'pre_deployment', file_path: `/b/${id}.sql.gz`, file_size_mb: 1, file_size_bytes: 1000,
    database_name: 'toogoodtogo', pg_dump_version: '15', compressed: true, sha256: 'a'.repeat(64), row_counts: {}, verified: true, verified_at: null,
    retention_until: '2026-12-08T03:00:00Z', artifact_id: 'v1.0.0', ...over,
  } as BackupRecord
}

const facts = (over: Partial<DbFacts>): DbFacts => ({ target: 'v1.0.0', current: 'v1.1.0', revision: '0001', expects: '0001', touched: false, keepData: false, backup: backup('toogoodtogo_20261201_030000'), ...over })

function refusal(f: DbFacts): OpsError {
  try {
    planDatabase(f)
  } catch (error) {
    if (error instanceof OpsError) return error
    throw error
  }
  throw new Error('planDatabase did not refuse')
}

describe('planDatabase: code only, or code and data', () => {
  it('keeps the database when its schema is what the target runs with and nothing touched it', () => {
    expect(planDatabase(facts({}))).toEqual({ action: 'keep' })
  })

  it("restores the target's backup when the schema moved on (a release's migrations ran)", () => {
    const plan = planDatabase(facts({ revision: '0002' }))
    expect(plan).toEqual({ action: 'restore', backup: expect.objectContaining({ backup_id: 'toogoodtogo_20261201_030000' }) })
  })

  it('restores when a migration failed halfway, although the revision did not move (or --restore-db)', () => {
    expect(planDatabase(facts({ touched: true })).action).toBe('restore')
  })

  it('downgrades with --keep-data instead of restoring', () => {
    expect(planDatabase(facts({ revision: '0002', keepData: true }))).toEqual({ action: 'downgrade', to: '0001' })
  })

  it('refuses before anything changes when the rule needs a backup there is not: exit 3', () => {
    const error = refusal(facts({ revision: '0002', backup: null }))
    expect(error.kind).toBe('restore_failed')
    expect(error.message).toMatch(/the database is at 0002 but v1\.0\.0 expects 0001, and there is no pre-deployment backup .*\(nothing changed\)/)
    expect(refusal(facts({ touched: true, backup: null })).message).toMatch(/changed by a failed migration/)
    expect(refusal(facts({ revision: '0002', keepData: true, current: null })).message).toMatch(/Cannot downgrade the schema to 0001/)
  })

  it("finds the target's own pre-deployment backup: the newest verified one taken while it ran", () => {
    const backups = [
      backup('toogoodtogo_20261201_030000'),
      backup('toogoodtogo_20261202_030000'),
      backup('toogoodtogo_20261203_030000', { verified: false }),
      backup('toogoodtogo_20261204_030000', { artifact_id: 'v1.1.0' }),
      backup('toogoodtogo_20261205_030000', { backup_type: 'scheduled' }),
    ]
    expect(preDeploymentBackupOf(backups, 'v1.0.0')?.backup_id).toBe('toogoodtogo_20261202_030000')
    expect(preDeploymentBackupOf(backups, 'v0.9.0')).toBeNull()
  })
})

describe('the records', () => {
  const oldArtifact = {
    artifact_id: 'v1.0.0', git_commit_sha: 'b'.repeat(40), git_tag: 'v1.0.0', docker_image_uri: 'r/bot:v1.0.0', docker_image_digest: null,
    deployed: true, deployed_at: '2026-12-01T03:00:00Z', rollback_from: null, schema_revision: '0001',
  }

  it("artifacts carry the image's build time and size; files written before still validate", () => {
    expect(artifactSchema.parse(oldArtifact)).toEqual(oldArtifact)
    expect(artifactSchema.parse({ ...oldArtifact, created_at: '2026-11-30T10:00:00Z', size_mb: 118 })).toMatchObject({ created_at: '2026-11-30T10:00:00Z', size_mb: 118 })
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-unit-'))
    try {
      fs.writeFileSync(path.join(dir, 'artifacts.json'), JSON.stringify({ current: oldArtifact, previous: null }))
      expect(readState(path.join(dir, 'artifacts.json')).current?.artifact_id).toBe('v1.0.0')
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })

  it("reads created_at and size_mb from docker image inspect's output", () => {
    expect(parseImageFacts('2026-11-30T10:00:00.123456789Z 123731968\n')).toEqual({ created_at: '2026-11-30T10:00:00Z', size_mb: 118 })
    expect(parseImageFacts('')).toEqual({ created_at: null, size_mb: null })
    expect(parseImageFacts('garbage -1')).toEqual({ created_at: null, size_mb: null })
  })

  it('a rollback event names the deploy it undoes; a refused run is cancelled; old lines still read', () => {
    const deploy = newEvent('deploy', 'v1.1.0', 'v1.0.0', 'manual')
    const rollback = { ...newEvent('rollback', 'v1.0.0', 'v1.1.0', 'automated'), rollback_of: deploy.event_id }
    expect(eventSchema.parse(rollback).rollback_of).toBe(deploy.event_id)
    expect(eventSchema.parse({ ...deploy, status: 'cancelled' }).status).toBe('cancelled')
    expect(() => eventSchema.parse({ ...rollback, rollback_of: 'not-a-uuid' })).toThrow()
    const { rollback_of: _, ...old } = rollback
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-unit-'))
    try {
      fs.writeFileSync(path.join(dir, 'deployments.log'), [JSON.stringify(deploy), JSON.stringify(old), ''].join('\n'))
      expect(readEvents(path.join(dir, 'deployments.log')).map((e) => e.event_type)).toEqual(['deploy', 'rollback'])
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe("health-check --json: each service's restart_count and memory_usage_mb", () => {
  it("reads docker stats' memory use in whole MB (of 1024 * 1024 bytes), and nothing it cannot read", () => {
    expect(parseMemUsage('12.5MiB / 512MiB')).toBe(13)
    expect(parseMemUsage('1.5GiB / 2GiB')).toBe(1536)
    expect(parseMemUsage('900KiB / 512MiB')).toBe(1)
    expect(parseMemUsage('0B / 0B')).toBe(0)
    expect(parseMemUsage('--')).toBeNull()
    expect(parseStats('abc 20MiB / 512MiB\ndef -- / --\n')).toEqual(new Map([['abc', 20], ['def', null]]))
  })
})
