import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfig, TOOLKIT_DIR } from '../../lib/core/config.ts'
import { parseEnvFile } from '../../lib/core/env-file.ts'

const noFile = { ENV_FILE: '/nonexistent/.env.production' }

describe('config', () => {
  it('has the contract defaults', () => {
    const cfg = loadConfig(noFile)
    expect(cfg).toMatchObject({
      DEPLOY_DIR: '/opt/toogoodtogo', BACKUP_DIR: '/opt/backups/postgres', HEALTH_CHECK_TIMEOUT: 120, MIN_FREE_DISK_MB: 2048,
      BACKUP_RETENTION_COUNT: 7, BACKUP_RETENTION_DAYS: 7, DB_MODE: 'compose', APP_SERVICES: ['bot'], KEY_TABLES: [], DB_OPERATION_TIMEOUT: 600,
    })
    expect(cfg.composeFile).toBe(path.join(TOOLKIT_DIR, 'deployment', 'docker-compose.prod.yml'))
  })
  it('names the variable when a value is bad', () => {
    expect(() => loadConfig({ ...noFile, HEALTH_CHECK_TIMEOUT: '2m' })).toThrow(/Invalid HEALTH_CHECK_TIMEOUT="2m"/)
    expect(() => loadConfig({ ...noFile, BACKUP_DIR: 'relative/dir' })).toThrow(/Invalid BACKUP_DIR.*absolute path/)
    expect(() => loadConfig({ ...noFile, DB_MODE: 'docker' })).toThrow(/Invalid DB_MODE/)
    expect(() => loadConfig({ ...noFile, POSTGRES_DB: 'x; drop' })).toThrow(/Invalid POSTGRES_DB/)
    expect(() => loadConfig({ ...noFile, DB_MODE: 'url' })).toThrow(/DB_MODE=url needs DATABASE_URL/)
  })
  it('reads database settings from .env.production; the environment wins', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-cfg-'))
    const file = path.join(dir, '.env.production')
    fs.writeFileSync(file, 'POSTGRES_DB=shop\nPOSTGRES_USER="shopper"\nSTRIPE_API_KEY=sk_x\n')
    expect(loadConfig({ ENV_FILE: file })).toMatchObject({ POSTGRES_DB: 'shop', POSTGRES_USER: 'shopper' })
    expect(loadConfig({ ENV_FILE: file, POSTGRES_DB: 'other' }).POSTGRES_DB).toBe('other')
  })
  it('APP_SERVICES set empty means no services', () => {
    expect(loadConfig({ ...noFile, APP_SERVICES: '' }).APP_SERVICES).toEqual([])
    expect(loadConfig({ ...noFile, APP_SERVICES: 'bot, worker' }).APP_SERVICES).toEqual(['bot', 'worker'])
  })
})

describe('env file parsing', () => {
  it('handles comments, export, quotes and inline comments, and evaluates nothing', () => {
    expect(parseEnvFile(`# comment\nexport A=1\nB="two words"\nC='$(rm -rf /)'\nD=plain # note\n\nbad line\n`)).toEqual({ A: '1', B: 'two words', C: '$(rm -rf /)', D: 'plain' })
  })
})

describe('setEnvValue', () => {
  it('replaces or appends one line, keeps the rest and the mode', async () => {
    const { setEnvValue } = await import('../../lib/core/env-file.ts')
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-env-')), '.env.production')
    // Not the default mode of a new file (600): a rewrite that forgot the mode would show.
    fs.writeFileSync(file, '# c\nAPP_VERSION=v1.0.0\nX=1')
    fs.chmodSync(file, 0o640)
    setEnvValue(file, 'APP_VERSION', 'v1.1.0')
    setEnvValue(file, 'NEW', 'yes')
    expect(fs.readFileSync(file, 'utf8')).toBe('# c\nAPP_VERSION=v1.1.0\nX=1\nNEW=yes\n')
    expect(fs.statSync(file).mode & 0o777).toBe(0o640)
  })
})
