import fs from 'node:fs'
import { fileURLToPath } from 'node:url'
import { helpText, parseCli, usageLine, type CliSpec, type OptionName, type ParsedCli } from './cli.ts'
import { exitCodeFor, messageOf, OpsError, type ExitCodes } from './errors.ts'
import { deployUserFor, reexecAs } from './deploy-user.ts'
import { configureLog, log } from './log.ts'
import { setDryRun } from './runner.ts'
import { runCleanups } from './interrupts.ts'

// The one place where a script's typed errors become the contract's exit codes and its closing
// ERROR line. process.exitCode rather than process.exit(), so buffered output is never cut off.
export interface MainOptions<S extends CliSpec = CliSpec> {
  exitCodes: ExitCodes
  /** the contract's last line on failure, e.g. "Backup failed" */
  failureLine?: string | ((error: unknown, cli: ParsedCli<S>) => string | null)
  /** stdout carries JSON: log lines then go to stderr only */
  jsonFlag?: OptionName<S>
  /** started by root on a host whose DEPLOY_DIR belongs to the deploy user: run as that user */
  asDeployUser?: boolean
}

/**
 * Whether the module at `moduleUrl` is the file node was started with (scripts/run.sh, tsx, a
 * systemd unit), not one a test or another script imported for its exported command. Both paths
 * resolved: an operator may start a script through a symlink.
 */
export function isEntryPoint(moduleUrl: string): boolean {
  const started = process.argv[1]
  if (!started) return false
  try {
    return fs.realpathSync(started) === fs.realpathSync(fileURLToPath(moduleUrl))
  } catch {
    return false
  }
}

export async function runMain<S extends CliSpec>(spec: S, options: MainOptions<S>, body: (cli: ParsedCli<S>) => Promise<void>): Promise<void> {
  let cli: ParsedCli<S>
  try {
    cli = parseCli(spec, process.argv.slice(2))
  } catch (error) {
    process.stderr.write(`${spec.name}: ${messageOf(error)}\n${usageLine(spec)}\n`)
    process.exitCode = 1
    return
  }
  if (cli.help) {
    process.stdout.write(helpText(spec))
    return
  }
  const deployUser = options.asDeployUser ? deployUserFor(process.env.DEPLOY_DIR || '/opt/toogoodtogo') : null
  if (deployUser) {
    process.exitCode = await reexecAs(deployUser)
    return
  }
  const dryRun = cli.values['dry-run'] === true
  configureLog({
    // The log file is the record an operator reads after an incident: a plan is not an event.
    file: dryRun ? null : process.env.LOG_FILE || '/var/log/toogoodtogo/deployment.log',
    stdoutIsData: options.jsonFlag ? cli.values[options.jsonFlag] === true : false,
    verbose: cli.values.verbose === true,
  })
  setDryRun(dryRun)
  installSignalHandlers(options)
  try {
    await body(cli)
  } catch (error) {
    if (!(error instanceof OpsError)) log.debug((error as Error)?.stack ?? String(error))
    if (!(error instanceof OpsError && error.alreadyLogged)) log.error(messageOf(error))
    const last = typeof options.failureLine === 'function' ? options.failureLine(error, cli) : options.failureLine
    if (last) log.error(last)
    process.exitCode = exitCodeFor(error, options.exitCodes)
  }
}

function installSignalHandlers<S extends CliSpec>(options: MainOptions<S>): void {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log.error(`Interrupted by ${signal}; cleaning up`)
      const last = typeof options.failureLine === 'function' ? null : options.failureLine
      void runCleanups().finally(() => {
        if (last) log.error(last)
        process.exit(signal === 'SIGINT' ? 130 : 143)
      })
    })
  }
}
