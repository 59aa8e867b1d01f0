import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { CONFIG_KEYS } from '../../lib/core/config.ts'
import { botEnvFile, botEnvText, isToolkitVariable, postgresEnvFile, postgresEnvText, SHARED_WITH_BOT, writeContainerEnvFiles } from '../../lib/core/container-env.ts'
import { optionalKeys, templateKeys } from '../../lib/core/deployment-config.ts'
import { parseEnvFile } from '../../lib/core/env-file.ts'
import { OFFSITE_VARIABLES } from '../../lib/core/offsite-config.ts'
import { ROOT } from '../support/scripts.ts'

const production = [
  '# the operator\'s file',
  'TELEGRAM_BOT_TOKEN=123:abc',
  'DATABASE_URL=postgresql://bot:pw123456789012@postgres:5432/toogoodtogo',
  'POSTGRES_USER=toogoodtogo',
  'POSTGRES_PASSWORD=superuserSecret1',
  'export SENTRY_DSN=https://k@sentry.example.com/1',
  'FEATURE_X="quoted value"',
  'OFFSITE_S3_BUCKET=bucket',
  'OFFSITE_S3_SECRET_ACCESS_KEY=bucketSecret',
  'PITR_ENABLED=true',
  'PITR_CIPHER_PASSWORD=cipherSecret0123456789',
  'BACKUP_AGE_RECIPIENT=age1xyz',
  'NOTIFY_WEBHOOK_URL=https://hooks.example.com/x',
  'TELEGRAM_NOTIFY_CHAT_ID=42',
  'ALERTMANAGER_URL=http://127.0.0.1:9093',
  'MONITORING_ENABLED=true',
  'not a variable line',
  '',
].join('\n')

describe("the bot's environment", () => {
  it("keeps every application variable as written, and none of the toolkit's", () => {
    const vars = parseEnvFile(botEnvText(production))
    expect(vars).toEqual({
      TELEGRAM_BOT_TOKEN: '123:abc',
      DATABASE_URL: 'postgresql://bot:pw123456789012@postgres:5432/toogoodtogo',
      POSTGRES_USER: 'toogoodtogo',
      SENTRY_DSN: 'https://k@sentry.example.com/1',
      FEATURE_X: 'quoted value',
    })
    expect(botEnvText(production)).toContain('FEATURE_X="quoted value"\n')
    for (const secret of ['superuserSecret1', 'bucketSecret', 'cipherSecret0123456789', 'hooks.example.com', 'age1xyz']) expect(botEnvText(production)).not.toContain(secret)
  })

  it('every variable the toolkit knows is either its own or shared with the bot, never both', () => {
    const template = fs.readFileSync(path.join(ROOT, 'deployment/.env.production.template'), 'utf8')
    const known = new Set([...CONFIG_KEYS, ...OFFSITE_VARIABLES, ...templateKeys(template), ...optionalKeys(template)])
    const unclassified = [...known].filter((name) => isToolkitVariable(name) === SHARED_WITH_BOT.has(name))
    expect(unclassified).toEqual([])
    expect([...SHARED_WITH_BOT].filter(isToolkitVariable)).toEqual([])
  })
})

describe("postgres's environment", () => {
  it('holds the bucket settings only with PITR on, the process environment over the file, empty values left out', () => {
    const file = parseEnvFile(production)
    expect(parseEnvFile(postgresEnvText(file, {}, false))).toEqual({})
    expect(parseEnvFile(postgresEnvText(file, { OFFSITE_S3_BUCKET: 'other', OFFSITE_S3_REGION: '' }, true))).toEqual({
      PITR_CIPHER_PASSWORD: 'cipherSecret0123456789',
      OFFSITE_S3_BUCKET: 'other',
      OFFSITE_S3_SECRET_ACCESS_KEY: 'bucketSecret',
    })
  })
})

describe('writing the derived files', () => {
  it('writes both beside .env.production, mode 600, and rewrites them only when their content changes', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-cenv-'))
    try {
      const envFile = path.join(dir, '.env.production')
      fs.writeFileSync(envFile, production, { mode: 0o600 })
      writeContainerEnvFiles(envFile, {}, true)
      expect(botEnvFile(envFile)).toBe(path.join(dir, '.env.bot'))
      for (const file of [botEnvFile(envFile), postgresEnvFile(envFile)]) expect(fs.statSync(file).mode & 0o777).toBe(0o600)
      expect(parseEnvFile(fs.readFileSync(postgresEnvFile(envFile), 'utf8')).OFFSITE_S3_BUCKET).toBe('bucket')
      const inode = fs.statSync(botEnvFile(envFile)).ino
      writeContainerEnvFiles(envFile, {}, true)
      expect(fs.statSync(botEnvFile(envFile)).ino).toBe(inode)
      fs.appendFileSync(envFile, 'NEW_APP_SETTING=1\n')
      writeContainerEnvFiles(envFile, {}, false)
      expect(parseEnvFile(fs.readFileSync(botEnvFile(envFile), 'utf8')).NEW_APP_SETTING).toBe('1')
      expect(parseEnvFile(fs.readFileSync(postgresEnvFile(envFile), 'utf8'))).toEqual({})
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
