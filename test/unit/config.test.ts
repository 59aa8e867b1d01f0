import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfig, TOOLKIT_DIR } from '../../lib/core/config.ts'
import { validateDeploymentConfig } from '../../lib/core/deployment-config.ts'
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

// The scripts (loadConfig) and the .env.production check (setup-droplet, deploy) once disagreed on
// these: each value is refused by both, in the same words, or by neither.
describe('one rule per variable: loadConfig and validateDeploymentConfig agree', () => {
  const verdicts = (key: string, value: string) => {
    let script: string | null = null
    try {
      loadConfig({ ...noFile, [key]: value })
    } catch (error) {
      script = (error as Error).message
    }
    const file = validateDeploymentConfig({ [key]: value }, 'polling').find((p) => p.key === key)?.message ?? null
    return { script, file }
  }
  const agree = (key: string, refused: string[], accepted: string[]) => {
    for (const value of refused) {
      const { script, file } = verdicts(key, value)
      expect(file, `${key}=${value} in .env.production`).not.toBeNull()
      expect(script, `${key}=${value} for a script`).toBe(`Invalid ${key}=${JSON.stringify(value)}: ${file}`)
    }
    for (const value of accepted) expect(verdicts(key, value), `${key}=${value}`).toEqual({ script: null, file: null })
  }
  it('BOT_IMAGE: a repository without a tag (the tag is the release)', () => {
    agree('BOT_IMAGE', ['registry.example.com/team/bot:v1.2.0', 'team//bot', 'Team/Bot'], ['registry.example.com/team/bot', '127.0.0.1:5000/ttg/bot', 'bot'])
  })
  it('MONITORING_ENABLED and PITR_ENABLED: true or false', () => {
    agree('MONITORING_ENABLED', ['yes', 'True', '1'], ['true', 'false'])
    agree('PITR_ENABLED', ['yes', 'True', '1'], ['true', 'false'])
  })
  it('ALERTMANAGER_URL: an http(s) URL that parses', () => {
    agree('ALERTMANAGER_URL', ['ftp://127.0.0.1:9093', 'http://:9093', '127.0.0.1:9093'], ['http://127.0.0.1:9093', 'https://alerts.example.com/am'])
  })
  it('POSTGRES_DB and POSTGRES_USER: what the scripts can pass to psql', () => {
    agree('POSTGRES_DB', ['my-db', '1shop'], ['toogoodtogo', 'shop_2'])
    agree('POSTGRES_USER', ['bad/user'], ['toogoodtogo', 'app.user-1'])
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
