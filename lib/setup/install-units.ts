import fs from 'node:fs'
import path from 'node:path'
import type { ComposeProject } from '../commands/compose.ts'
import { systemctl, unitWarnings } from '../commands/systemd.ts'
import { TOOLKIT_DIR } from '../core/config.ts'
import { OpsError } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { $read, isDryRun } from '../core/shell.ts'
import { writeFileIfChanged } from './files.ts'
import { step } from './plan.ts'
import type { SetupSettings } from './settings.ts'
import { TSX_COMMAND, TSX_MARK, tsxWrapper } from './tsx-command.ts'
import { LOGROTATE_FILE, renderUnits } from './units.ts'

// setup-droplet's systemd step: the units lib/setup/units.ts renders, written, checked the way
// systemd will load them, and loaded; and the `tsx` command on PATH.

export async function createSystemdService(s: SetupSettings, stack: ComposeProject): Promise<void> {
  step('Creating systemd service')
  // The stack unit runs scripts/stack.ts, which reads the compose files and profiles from
  // .env.production at each start: a later switch between polling and webhook mode needs no new unit.
  const files = renderUnits({
    TOOLKIT_DIR,
    DEPLOY_DIR: s.cfg.DEPLOY_DIR,
    ENV_FILE: s.cfg.envFile,
    BACKUP_DIR: s.cfg.BACKUP_DIR,
    LOG_FILE: s.cfg.LOG_FILE,
    LOG_DIR: s.logDir,
    COMPOSE_PROJECT_NAME: s.cfg.COMPOSE_PROJECT_NAME,
    COMPOSE_FILE: s.cfg.composeFile,
    DEPLOY_USER: s.DEPLOY_USER,
    TSX: path.join(TOOLKIT_DIR, 'node_modules', '.bin', 'tsx'),
    PATH: servicePath(),
  }, { monitoring: stack.profiles.includes('monitoring') })
  for (const file of files) writeFileIfChanged(file.file, file.content, 0o644)
  const units = files.filter((f) => f.file.startsWith('/etc/systemd/')).map((f) => f.file)
  if (!isDryRun()) {
    // It exits 0 on a value it only ignores (`Type=bogus`): its output is read too.
    const verified = await $read({ timeoutMs: 60_000 })`systemd-analyze verify --man=no ${units}`
    const warnings = unitWarnings(verified.stdout + verified.stderr, units)
    if (warnings.length) throw new OpsError('config', `systemd-analyze verify: ${warnings.join(' | ')}`)
    // -d parses and dry-runs the file; it changes nothing.
    await $read({ timeoutMs: 30_000 })`logrotate --debug ${LOGROTATE_FILE}`
  }
  await systemctl('daemon-reload')
}

/** `tsx` on PATH (lib/setup/tsx-command.ts), unless someone else's tsx is there already. */
export function installTsxCommand(): void {
  const current = fs.existsSync(TSX_COMMAND) ? fs.readFileSync(TSX_COMMAND, 'utf8') : null
  if (current !== null && !current.includes(TSX_MARK)) {
    log.warn(`${TSX_COMMAND} exists and is not the toolkit's: left alone. Run the scripts with ${path.join(TOOLKIT_DIR, 'node_modules', '.bin', 'tsx')} or the .sh wrappers`)
    return
  }
  writeFileIfChanged(TSX_COMMAND, tsxWrapper(process.execPath, TOOLKIT_DIR), 0o755)
}

function servicePath(): string {
  const dirs = [path.dirname(process.execPath), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']
  return [...new Set(dirs)].join(':')
}
