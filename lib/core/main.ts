import fs from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'
import { helpText, parseCli, usageLine, type CliSpec, type OptionName, type ParsedCli } from './cli.ts'
import { exitCodeFor, messageOf, OpsError, type ExitCodes } from './errors.ts'
import { deployUserFor, reexecAs } from './deploy-user.ts'
import { configureLog, log } from './log.ts'
import { channelsFrom, markFailureTold, notificationsDelivered, notify } from './notify.ts'
import { isDryRun, setDryRun } from './shell.ts'
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
  /**
   * What a failure leaves behind, for the notification runMain sends on a non-zero exit; null: the
   * script has told it already. false: the toolkit does not tell this script's failures (read on
   * screen, or told once by its systemd unit's notifier). Without it the notification says what
   * failed, on which host, and where to look.
   */
  failureNotice?: ((error: unknown, cli: ParsedCli<S>) => FailureNotice | null) | false
}

export interface FailureNotice {
  /** the state things are in now, e.g. "No new backup was made; the earlier ones are untouched." */
  state?: string
  /** the one command to look further (default: the unit's journal under systemd, else the log file) */
  look?: string
}

/**
 * Not told: a mistyped argument (a unit with one fails, and its notifier tells that), and a
 * confirmation the operator refused at the terminal. Refused for want of a terminal (an automated
 * deploy without --yes) nobody saw: told.
 */
function needsNoTelling(error: unknown): boolean {
  return error instanceof OpsError && (error.kind === 'usage' || (error.kind === 'refused' && process.stdin.isTTY === true))
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
    await tellFailure(spec, options, cli, error, process.exitCode)
  }
}

/**
 * Every failure is told once, here, unless the script told it already (OpsError.alreadyNotified,
 * or its failureNotice says null). Once told, under systemd a marker keeps the unit's OnFailure=
 * notifier quiet; untold (or undelivered), that notifier tells it instead.
 */
async function tellFailure<S extends CliSpec>(spec: S, options: MainOptions<S>, cli: ParsedCli<S>, error: unknown, exitCode: number): Promise<void> {
  if (isDryRun() || options.failureNotice === false || needsNoTelling(error)) return
  const notice = error instanceof OpsError && error.alreadyNotified ? null : options.failureNotice ? options.failureNotice(error, cli) : {}
  const before = notificationsDelivered()
  if (notice) {
    const what = [spec.name, ...process.argv.slice(2).filter((a) => a !== '--')].join(' ')
    await notify(channelsFrom(), failureText(what, notice, error, exitCode))
  }
  const told = notice ? notificationsDelivered() > before : notificationsDelivered() > 0
  if (told) markFailureTold()
}

/** "<what> failed on <host> (exit N): <why>. <state> Look further: <command>" */
export function failureText(what: string, notice: FailureNotice, error: unknown, exitCode: number, env: NodeJS.ProcessEnv = process.env): string {
  const why = messageOf(error).replace(/\s+/g, ' ').trim().slice(0, 800)
  const state = notice.state ? ` ${notice.state}` : ''
  return `${what} failed on ${os.hostname()} (exit ${exitCode}): ${why}${/[.!?]$/.test(why) ? '' : '.'}${state} Look further: ${notice.look ?? lookFurther(env)}`
}

function lookFurther(env: NodeJS.ProcessEnv): string {
  const unit = env.INVOCATION_ID ? systemdUnit() : null
  return unit ? `journalctl -u ${unit}` : `tail -n 50 ${env.LOG_FILE || '/var/log/toogoodtogo/deployment.log'}`
}

/** The service this process runs in, from its cgroup (…/toogoodtogo-backup.service). */
function systemdUnit(): string | null {
  try {
    return /\/([\w@.-]+\.service)$/m.exec(fs.readFileSync('/proc/self/cgroup', 'utf8'))?.[1] ?? null
  } catch {
    return null
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
