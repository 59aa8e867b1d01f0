// stack up|start|stop [service...]: the whole stack brought up or stopped as deploy runs it: the compose
// files and profiles come from .env.production each time (webhook mode's nginx follows
// TELEGRAM_WEBHOOK_URL, the monitoring stack MONITORING_ENABLED). The stack's systemd unit runs it
// at boot and shutdown, so a switch between polling and webhook mode holds at the next boot
// without rewriting the unit (which the deploy user could not).
import type { CliSpec, ParsedCli } from '../lib/core/cli.ts'
import { composeBase, composeEnv } from '../lib/commands/compose.ts'
import { openContext, requireCompose } from '../lib/stack/context.ts'
import { OpsError } from '../lib/core/errors.ts'
import { log } from '../lib/core/log.ts'
import { isEntryPoint, runMain } from '../lib/core/main.ts'
import { $ } from '../lib/core/shell.ts'

const spec = {
  name: 'stack',
  summary: 'Bring the stack up (containers as the last deploy left them) or stop it, as .env.production configures it',
  usage: 'stack up|start|stop [service...] [--dry-run]',
  positionals: [
    { name: 'up|start|stop', description: 'up: start every service of the configured mode, creating missing ones; start: only containers that exist; stop: stop them' },
    { name: 'service', description: 'only these services (default: all)' },
  ],
  maxPositionals: 10,
  options: {
    'dry-run': { type: 'boolean', short: 'n', description: 'Print the compose command; change nothing' },
  },
  exitCodes: [
    [0, 'Done'],
    [1, 'compose failed (its last lines are in the error)'],
  ],
  env: [
    ['ENV_FILE', 'the .env.production the stack runs with ($DEPLOY_DIR/.env.production)'],
    ['COMPOSE_PROJECT_NAME', 'the stack (toogoodtogo)'],
  ],
  notes: [
    '`up` is `docker compose up --detach --no-recreate --remove-orphans` with the files and profiles',
    'deploy uses: containers that exist start with the image they ran; missing ones are created from',
    '.env.production (APP_VERSION is the release deploy recorded there). It does not switch modes:',
    'deploy does (README, "Moving between polling and webhook mode").',
  ],
  examples: ['stack up', 'stack stop', 'stack stop nginx   # a certbot renewal pre-hook (post-hook: stack start nginx)'],
} satisfies CliSpec

// The CLI, when this file is the one node started; a test imports the command without running it.
if (isEntryPoint(import.meta.url)) await runMain(spec, { exitCodes: {}, asDeployUser: true, failureNotice: false }, stack)

export async function stack(cli: ParsedCli<typeof spec>): Promise<void> {
  const [action, ...services] = cli.positionals
  if (action !== 'up' && action !== 'start' && action !== 'stop') throw new OpsError('usage', `Expected up, start or stop, got ${action ?? 'nothing'}`)
  const ctx = await openContext()
  const p = requireCompose(ctx)
  log.info(`${action === 'stop' ? 'Stopping' : 'Starting'} ${services.length ? services.join(', ') : 'the stack'} (profiles: ${p.profiles.join(', ') || 'none'})`)
  const [dc, env] = [composeBase(p), composeEnv(p)]
  // up: containers that exist as they are (the image the last deploy gave them), missing ones
  // created from .env.production; a first start may pull (the contract's 15 minutes).
  if (action === 'up') await $({ env, timeoutMs: 15 * 60_000 })`${dc} up --detach --no-recreate --remove-orphans ${services}`
  // start, not up: the same containers come back with the image they ran, whatever APP_VERSION says
  if (action === 'start') await $({ env })`${dc} start ${services}`
  // each service gets its own stop_grace_period (bot, then postgres)
  if (action === 'stop') await $({ env, timeoutMs: 140_000 })`${dc} stop ${services}`
}
