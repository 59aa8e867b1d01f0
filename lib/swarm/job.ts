import path from 'node:path'
import type { Context } from '../stack/context.ts'
import { messageOf } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { $, $read, isDryRun } from '../core/shell.ts'
import { requireImage } from '../release/release.ts'
import { sleep } from './service.ts'
import { stackName, stackNetwork, writeStackFiles } from './stack.ts'

// A one-off task of a release's image on the Swarm (the migrations, `alembic heads`): a
// replicated job, never restarted, on the stack's network when the stack exists, with
// DATABASE_URL from a secret of its own (never in the spec), removed with it afterwards.

const TERMINAL = new Set(['Complete', 'Failed', 'Rejected', 'Shutdown', 'Orphaned'])

/** What the task printed (docker service logs) and how it ended: 0 when it completed. */
export interface JobResult {
  exitCode: number
  stdout: string
  stderr: string
}

export async function runJob(ctx: Context, tag: string, what: string, command: string): Promise<JobResult> {
  const image = `${requireImage(ctx.cfg)}:${tag}`
  if (isDryRun()) {
    // The secret, the network and the task's states only exist when it runs: the plan is one line.
    await $`docker service create --mode replicated-job ${image} sh -c ${command}`
    return { exitCode: 0, stdout: '', stderr: '' }
  }
  const { cfg } = ctx
  const name = `${stackName(cfg)}_${what}_${Date.now().toString(36)}`
  const files = writeStackFiles(cfg)
  await $({ timeoutMs: 30_000 })`docker secret create ${name} ${path.join(files.SWARM_SECRETS_DIR, 'database_url')}`
  try {
    const network = (await $read({ nothrow: true, timeoutMs: 30_000 })`docker network inspect ${stackNetwork(cfg)}`).exitCode === 0 ? ['--network', stackNetwork(cfg)] : []
    // The URL is read from the secret inside the task, so it is in no spec, no argv and no log.
    const entrypoint = 'DATABASE_URL="$(cat /run/secrets/database_url)" && export DATABASE_URL && exec /bin/sh -c "$0"'
    await $({ timeoutMs: 60_000 })`docker service create --detach --name ${name} --mode replicated-job --restart-condition none ${network} --secret ${`source=${name},target=database_url`} --env-file ${files.SWARM_BOT_ENV_FILE} --env ${`APP_VERSION=${tag}`} --entrypoint /bin/sh ${image} -c ${entrypoint} ${command}`
    const state = await waitForJob(ctx, name)
    const logs = await $read({ nothrow: true, timeoutMs: 60_000 })`docker service logs --raw --no-task-ids ${name}`
    const code = state.state === 'Complete' ? 0 : Number(/exit \((\d+)\)/.exec(state.error)?.[1] ?? 1)
    return { exitCode: code, stdout: logs.stdout, stderr: logs.stderr + (code === 0 ? '' : `\n${state.error || state.state}`) }
  } finally {
    await $({ nothrow: true, timeoutMs: 30_000 })`docker service rm ${name}`.catch((e: unknown) => log.warn(`Could not remove the one-off service ${name}: ${messageOf(e)}`))
    await removeSecretWhenFree(name)
  }
}

async function waitForJob(ctx: Context, name: string): Promise<{ state: string; error: string }> {
  const deadline = Date.now() + ctx.cfg.DB_OPERATION_TIMEOUT * 1000
  for (;;) {
    const ps = await $read({ nothrow: true, timeoutMs: 30_000 })`docker service ps --no-trunc --format ${'{{.CurrentState}}|{{.Error}}'} ${name}`
    const [state = '', error = ''] = (ps.stdout.trim().split('\n')[0] ?? '').split('|')
    const word = state.split(' ')[0] ?? ''
    if (TERMINAL.has(word)) return { state: word, error }
    if (Date.now() > deadline) return { state: 'Timeout', error: `the one-off task did not finish in ${ctx.cfg.DB_OPERATION_TIMEOUT}s (last state: ${state || 'none'})` }
    await sleep(500)
  }
}

/** A secret in use by a task being removed cannot go yet: a few tries. */
async function removeSecretWhenFree(name: string): Promise<void> {
  for (let attempt = 1; attempt <= 10; attempt++) {
    if ((await $({ nothrow: true, timeoutMs: 30_000 })`docker secret rm ${name}`).exitCode === 0) return
    await sleep(1000)
  }
  log.warn(`Could not remove the one-off secret ${name}: docker secret rm ${name}`)
}
