import { describe, expect, it } from 'vitest'
import { composeBase, composeExec, type ComposeProject } from '../../lib/commands/compose.ts'
import { loadConfig, MONITORING_COMPOSE_FILE, stackProfiles } from '../../lib/core/config.ts'
import { compressCommand } from '../../lib/commands/gzip.ts'
import { doBlock, pgDumpCommand, psqlQuery, psqlRestore, type Db } from '../../lib/commands/postgres.ts'
import { parseDatabaseUrl } from '../../lib/core/database-url.ts'

// Command plans are data: these are the exact argv arrays the runner executes.
const v2: ComposeProject = { flavor: 'v2', files: ['/opt/toogoodtogo/deployment/deployment/docker-compose.prod.yml'], project: 'toogoodtogo', envFile: '/opt/toogoodtogo/.env.production', profiles: [] }
const v1: ComposeProject = { ...v2, flavor: 'v1', envFile: null }
const composeDb: Db = { mode: 'compose', compose: v2, user: 'ttg', database: 'toogoodtogo', maintenanceDb: 'postgres', timeoutMs: 600_000 }
const urlDb: Db = { ...parseDatabaseUrl('postgresql://app:p%40ss@db.example.com:25060/toogoodtogo?sslmode=require'), maintenanceDb: 'defaultdb', timeoutMs: 600_000 }

describe('compose commands', () => {
  it('v2 and v1 differ only in the binary; the env file is passed when present', () => {
    expect(composeBase(v2)).toEqual(['docker', 'compose', '--project-name', 'toogoodtogo', '--file', v2.files[0], '--env-file', '/opt/toogoodtogo/.env.production'])
    expect(composeBase(v1)).toEqual(['docker-compose', '--project-name', 'toogoodtogo', '--file', v2.files[0]])
  })
  it('every -f file in order, then every profile: the monitoring file and profiles reach every command, `up --remove-orphans` included', () => {
    const cfg = loadConfig({ DEPLOY_DIR: '/nonexistent', MONITORING_ENABLED: 'true', TELEGRAM_WEBHOOK_URL: 'https://bot.example.com/webhook', COMPOSE_PROFILES: 'monitoring-grafana' })
    expect(cfg.composeFiles).toEqual([cfg.composeFile, MONITORING_COMPOSE_FILE])
    const monitored: ComposeProject = { ...v2, files: cfg.composeFiles, profiles: cfg.composeProfiles }
    expect(composeBase(monitored)).toEqual([
      'docker', 'compose', '--project-name', 'toogoodtogo', '--file', cfg.composeFile, '--file', MONITORING_COMPOSE_FILE, '--env-file', '/opt/toogoodtogo/.env.production',
      '--profile', 'monitoring-grafana', '--profile', 'webhook', '--profile', 'monitoring', '--profile', 'monitoring-webhook',
    ])
  })
  it('profiles: the operator\'s own, webhook mode\'s nginx, monitoring (with nginx\'s exporter only in webhook mode), each once', () => {
    expect(stackProfiles(undefined, { webhook: false, monitoring: false })).toEqual([])
    expect(stackProfiles('webhook, extra', { webhook: true, monitoring: false })).toEqual(['webhook', 'extra'])
    expect(stackProfiles('', { webhook: false, monitoring: true })).toEqual(['monitoring'])
    expect(stackProfiles(undefined, { webhook: true, monitoring: true })).toEqual(['webhook', 'monitoring', 'monitoring-webhook'])
    expect(loadConfig({ DEPLOY_DIR: '/nonexistent' }).composeFiles).toHaveLength(1)
  })
  it('exec always disables the TTY and passes environment with -e', () => {
    expect(composeExec(v1, 'postgres', ['psql'], { PGOPTIONS: '-c a=b' }).argv).toEqual([...composeBase(v1), 'exec', '-T', '-e', 'PGOPTIONS=-c a=b', 'postgres', 'psql'])
  })
})

describe('postgres commands', () => {
  it('compose mode runs pg_dump inside the postgres service', () => {
    expect(pgDumpCommand(composeDb)).toEqual({
      argv: [...composeBase(v2), 'exec', '-T', 'postgres', 'pg_dump', '-U', 'ttg', '--format=plain', '--no-owner', '--dbname', 'toogoodtogo'],
      env: { ENV_FILE: '/opt/toogoodtogo/.env.production', BOT_ENV_FILE: '/opt/toogoodtogo/.env.bot', POSTGRES_ENV_FILE: '/opt/toogoodtogo/.env.postgres' },
      timeoutMs: 600_000,
      mutates: false,
    })
  })
  it('url mode runs the host pg_dump; the password goes in PGPASSWORD, never argv', () => {
    const cmd = pgDumpCommand(urlDb)
    expect(cmd.argv).toEqual(['pg_dump', '-h', 'db.example.com', '-p', '25060', '-U', 'app', '--format=plain', '--no-owner', '--dbname', 'toogoodtogo'])
    expect(cmd.env).toEqual({ PGSSLMODE: 'require', PGPASSWORD: 'p@ss', PGCONNECT_TIMEOUT: '10' })
    expect(cmd.argv.join(' ')).not.toContain('p@ss')
  })
  it('queries are unaligned, tuples-only and stop on the first error', () => {
    expect(psqlQuery(urlDb, 'defaultdb', 'SELECT 1', { mutates: false }).argv).toEqual([
      'psql', '-h', 'db.example.com', '-p', '25060', '-U', 'app', '--no-psqlrc', '--set', 'ON_ERROR_STOP=1', '--no-align', '--tuples-only', '--quiet', '--dbname', 'defaultdb', '--command', 'SELECT 1',
    ])
  })
  it('a restore is not quiet (the COPY tags are read) and stops on the first error', () => {
    const cmd = psqlRestore(composeDb, 'scratch', { singleTransaction: false, restrictKey: 'k3y' })
    expect(cmd.argv).toEqual([...composeBase(v2), 'exec', '-T', '-e', 'PGOPTIONS=-c maintenance_work_mem=256MB -c synchronous_commit=off', 'postgres', 'psql', '-U', 'ttg', '--no-psqlrc', '--set', 'ON_ERROR_STOP=1', '--dbname', 'scratch', '--command', '\\restrict k3y', '--file', '-'])
    expect(psqlRestore(composeDb, 'scratch', { singleTransaction: true, restrictKey: 'k3y' }).argv.slice(-8, -4)).toEqual(['ON_ERROR_STOP=1', '--single-transaction', '--dbname', 'scratch'])
  })
  it('rejects database URLs it cannot use safely', () => {
    expect(() => parseDatabaseUrl('mysql://a:b@h/db')).toThrow(/must start with postgresql/)
    expect(() => parseDatabaseUrl('postgresql://a:b@h/db;drop')).toThrow(/plain identifier/)
    expect(() => parseDatabaseUrl('postgresql://a:b@h/db?options=-c%20x')).toThrow(/not supported/)
    expect(() => parseDatabaseUrl('not a url')).toThrow(/not a valid URL/)
  })
})

describe('compression', () => {
  it('pigz on every core when present, else gzip, same level either way', () => {
    expect(compressCommand(true).argv.slice(0, 3)).toEqual(['pigz', '-6', '--processes'])
    expect(compressCommand(false).argv).toEqual(['gzip', '-6', '--stdout'])
  })
})

describe('doBlock', () => {
  it('dollar-quotes with a tag the statements do not contain', () => {
    expect(doBlock('PERFORM 1;')).toBe('DO $do$ BEGIN PERFORM 1; END $do$')
    expect(doBlock(`ALTER DATABASE "a$do$b" RENAME TO "c";`)).toBe('DO $do1$ BEGIN ALTER DATABASE "a$do$b" RENAME TO "c"; END $do1$')
  })
})
