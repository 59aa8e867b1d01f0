import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { OpsError } from '../../lib/core/errors.ts'
import { failureText } from '../../lib/core/main.ts'
import { backupNotice, restoreNotice } from '../../lib/core/notices.ts'
import { channelsFrom } from '../../lib/core/notify.ts'
import { FAILURE_NOTIFIER, renderUnits, type UnitValues } from '../../lib/setup/units.ts'

const cli = (values: Record<string, string | boolean> = {}) => ({ spec: { name: 'x', summary: '', usage: '', options: {}, exitCodes: [] }, help: false, values, positionals: [] }) as never

describe('the failure notification', () => {
  it('names what failed, the host, the exit code, the state and where to look', () => {
    const text = failureText('backup scheduled', { state: 'No new backup was made.' }, new OpsError('dump_failed', 'pg_dump failed:\n  connection refused'), 1, { LOG_FILE: '/var/log/t/d.log' })
    expect(text).toBe(`backup scheduled failed on ${os.hostname()} (exit 1): pg_dump failed: connection refused. No new backup was made. Look further: tail -n 50 /var/log/t/d.log`)
    expect(failureText('restore x', { look: 'backup.sh --list' }, new Error('gone.'), 2, {})).toMatch(/\(exit 2\): gone\. Look further: backup\.sh --list$/)
  })

  it("backup's off-site/physical exit 4 was told where it failed; a drill says the live database was untouched", () => {
    expect(backupNotice(new OpsError('backup_failed', 'x'), cli())).toBeNull()
    expect(backupNotice(new OpsError('dump_failed', 'x'), cli())?.state).toMatch(/No new backup was made/)
    expect(restoreNotice(new OpsError('verify_failed', 'x'), cli({ drill: true }))?.state).toMatch(/live database was not touched/)
    expect(restoreNotice(new OpsError('not_found', 'x'), cli())?.state).toMatch(/Nothing was changed/)
  })

  it('reads the channels from .env.production, the environment first, and drops what is not a URL or chat id', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-channels-'))
    const file = path.join(dir, '.env.production')
    fs.writeFileSync(file, 'NOTIFY_WEBHOOK_URL="https://hooks.example.com/T/B/x"\nTELEGRAM_NOTIFY_CHAT_ID=not a chat\nTELEGRAM_BOT_TOKEN=123:abc\nBOT_IMAGE=INVALID UPPER\n')
    expect(channelsFrom({ ENV_FILE: file })).toEqual({ NOTIFY_WEBHOOK_URL: 'https://hooks.example.com/T/B/x', TELEGRAM_NOTIFY_CHAT_ID: undefined, TELEGRAM_BOT_TOKEN: '123:abc', TELEGRAM_API_BASE: 'https://api.telegram.org' })
    expect(channelsFrom({ ENV_FILE: file, NOTIFY_WEBHOOK_URL: 'http://127.0.0.1:9/h', TELEGRAM_NOTIFY_CHAT_ID: '-100' })).toMatchObject({ NOTIFY_WEBHOOK_URL: 'http://127.0.0.1:9/h', TELEGRAM_NOTIFY_CHAT_ID: '-100' })
    expect(channelsFrom({ ENV_FILE: path.join(dir, 'missing') }).NOTIFY_WEBHOOK_URL).toBeUndefined()
    fs.rmSync(dir, { recursive: true })
  })
})

describe('the OnFailure= notifier', () => {
  const values: UnitValues = {
    TOOLKIT_DIR: '/opt/toogoodtogo/deployment', DEPLOY_DIR: '/opt/toogoodtogo', ENV_FILE: '/opt/toogoodtogo/.env.production', BACKUP_DIR: '/opt/backups/postgres',
    LOG_FILE: '/var/log/toogoodtogo/deployment.log', LOG_DIR: '/var/log/toogoodtogo', COMPOSE_PROJECT_NAME: 'toogoodtogo', COMPOSE_FILE: '/opt/toogoodtogo/deployment/deployment/docker-compose.prod.yml',
    DEPLOY_USER: 'deploy', TSX: '/opt/toogoodtogo/deployment/node_modules/.bin/tsx', PATH: '/usr/bin:/bin',
  }
  const files = renderUnits(values)
  const byName = Object.fromEntries(files.map((f) => [path.basename(f.file), f.content]))

  it('is named by the backup, drill, post-boot health check and stack units', () => {
    for (const unit of ['toogoodtogo-backup.service', 'toogoodtogo-restore-drill.service', 'toogoodtogo-healthcheck.service', 'toogoodtogo.service']) {
      expect(byName[unit], unit).toMatch(/^OnFailure=toogoodtogo-failure@%n\.service$/m)
    }
    // The units whose toolkit tells a failure itself give it the directory for its marker.
    for (const unit of ['toogoodtogo-backup.service', 'toogoodtogo-restore-drill.service']) expect(byName[unit]).toMatch(/^RuntimeDirectory=toogoodtogo\nRuntimeDirectoryPreserve=yes$/m)
  })

  it("runs, as root, the script setup installs outside the deploy user's checkout", () => {
    const unit = byName['toogoodtogo-failure@.service'] ?? ''
    expect(unit).toContain(`ExecStart=/bin/sh ${FAILURE_NOTIFIER.file} %i\n`)
    expect(unit).toContain('Environment=ENV_FILE=/opt/toogoodtogo/.env.production\n')
    expect(unit).not.toMatch(/^User=/m)
    expect(files.find((f) => f.file === FAILURE_NOTIFIER.file)?.content).toMatch(/^#!\/bin\/sh\n/)
  })
})
