// status [--json]: the one screen an operator reads first: the running version, the last deploy,
// the newest local and off-site backup, the last drill, free disk, each service's health and the
// alerts firing. It reads state files and probes the services in parallel; anything it cannot read
// is named on the screen, never a crash. It changes nothing.
import { flag, type CliSpec, type ParsedCli } from '../lib/core/cli.ts'
import { openContext } from '../lib/stack/context.ts'
import { OpsError } from '../lib/core/errors.ts'
import { configureLog } from '../lib/core/log.ts'
import { isEntryPoint, runMain } from '../lib/core/main.ts'
import { collectStatus, formatStatus, needsAttention } from '../lib/status/report.ts'

const spec = {
  name: 'status',
  summary: 'Show the running version, last deploy, backups, drill, disk, health and firing alerts',
  usage: 'status [--json]',
  positionals: [],
  maxPositionals: 0,
  options: {
    json: { type: 'boolean', description: 'Print the report as JSON on stdout' },
  },
  exitCodes: [
    [0, 'Everything was read and nothing needs attention'],
    [1, 'Something needs attention or could not be read (named on the last line)'],
  ],
  env: [
    ['ALERTMANAGER_URL', 'Alertmanager to ask for firing alerts, e.g. http://127.0.0.1:9093 (monitoring profile)'],
    ['ARTIFACTS_FILE / AUDIT_LOG / BACKUP_DIR', 'the state files read'],
  ],
  notes: [
    'Nothing is changed and nothing is written to LOG_FILE. Health is probed as health-check does,',
    'every service at once; a probe that cannot run (no Docker, no stack) is shown as such.',
    'On a Docker Swarm manager it also shows the nodes, the services (replicas running of desired)',
    'and the tasks that should run and do not, or ended with an error.',
  ],
  examples: ['status', 'status --json | jq .health.overall_status'],
} satisfies CliSpec

// The CLI, when this file is the one node started; a test imports the command without running it.
if (isEntryPoint(import.meta.url)) await runMain(spec, { exitCodes: {}, jsonFlag: 'json', asDeployUser: true, failureNotice: false }, status)

export async function status(cli: ParsedCli<typeof spec>): Promise<void> {
  // A screen read many times a day is not an event: nothing goes to LOG_FILE (the runner would
  // otherwise record every docker probe there).
  configureLog({ file: null })
  const ctx = await openContext()
  const now = new Date()
  const report = await collectStatus(ctx, { now })
  if (flag(cli, 'json')) process.stdout.write(JSON.stringify({ ...report, needs_attention: needsAttention(report, now) }, null, 2) + '\n')
  else process.stdout.write(formatStatus(report, now))
  const attention = needsAttention(report, now)
  // Exit 1 without another ERROR line: the screen already says what is wrong.
  if (attention.length > 0) throw new OpsError('command_failed', `Needs attention: ${attention.join('; ')}`, { alreadyLogged: true })
}
