// `npm run demo`: the main job on a local sandbox. Provisions the Docker test bed (as root on
// Debian), deploys the fixture bot v1.0.0 from the local registry with the production compose file,
// then v1.1.0, then v1.2.0 whose migration fails (the automatic rollback puts v1.1.0 and every row
// back), runs health-check, takes a backup, restores it after a simulated accident, and prints
// where to look. The stack stays up for exploring; the last lines say how to remove it.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from '../test/support/scripts.ts'
import { bedEnv, createStack, exec, stackChecksums, type Stack } from '../test/support/stack.ts'

const SANDBOX = '/tmp/ttg-demo'
const PROJECT = 'ttgdemo'

provisionTestBed()
const stack = createStack('v2', { project: PROJECT, dir: SANDBOX })
await removePreviousRun(stack)
await cloneApplication(stack)
await show(stack, 'deploy', ['v1.0.0', '--yes'])
await show(stack, 'deploy', ['v1.1.0', '--yes'])
const beforeFailedDeploy = await stackChecksums(stack)
await show(stack, 'deploy', ['v1.2.0', '--yes'], 3)
const intact = sameTables(beforeFailedDeploy, await stackChecksums(stack))
step(`After the failed migration, v1.1.0 runs again and every table is as before: ${intact ? 'yes' : 'NO'}`)
await show(stack, 'health-check', [])
const backup = await show(stack, 'backup', ['manual'])
const backupId = /Backup complete: .*\/([^/]+)\.sql\.gz/.exec(backup)?.[1] ?? ''
const before = await stackChecksums(stack)
step('Simulating an accident: DELETE FROM reservations')
await stack.psql('DELETE FROM reservations')
await show(stack, 'restore', [backupId, '--yes'])
const same = sameTables(before, await stackChecksums(stack))
step(`Every table identical to before the accident: ${same ? 'yes' : 'NO'}`)
printWhereToLook(stack)
if (!same || !intact) process.exitCode = 1

function sameTables(a: Record<string, string>, b: Record<string, string>): boolean {
  return JSON.stringify(a) === JSON.stringify(b)
}

/** The application repository deploy checks tags out of: the bed's, as a droplet's app/ clone. */
async function cloneApplication(s: Stack): Promise<void> {
  s.env.APP_DIR = path.join(SANDBOX, 'app')
  s.env.HEALTH_CHECK_TIMEOUT = '120'
  const clone = await exec(['git', 'clone', '--quiet', bedEnv().APP_REPO ?? '', s.env.APP_DIR])
  if (clone.code !== 0) throw new Error(`git clone of the fixture application failed: ${clone.stderr}`)
}

function provisionTestBed(): void {
  step('Provisioning the local Docker sandbox (test/e2e/bed/provision.sh; needs root on Debian 12)')
  const result = spawnSync('bash', [path.join(ROOT, 'test/e2e/bed/provision.sh')], { stdio: 'inherit' })
  if (result.status !== 0) {
    console.error('The Docker sandbox could not be provisioned. Without Docker, `npm run demo:postgres` shows backup and restore on a throwaway PostgreSQL.')
    process.exit(1)
  }
}

async function removePreviousRun(s: Stack): Promise<void> {
  await s.compose(['down', '--volumes', '--remove-orphans', '--timeout', '5'])
  for (const name of ['backups', 'deployment.log', 'deployments.log', 'artifacts.json', 'app', '.deploy.lock']) fs.rmSync(path.join(SANDBOX, name), { recursive: true, force: true })
}

async function show(s: Stack, script: string, args: string[], expectedExit = 0): Promise<string> {
  step(`${script} ${args.join(' ')}${expectedExit ? ` (expected to fail with exit ${expectedExit})` : ''}`)
  const r = await s.script(script, args)
  process.stdout.write(r.stdout + r.stderr)
  if (r.code !== expectedExit) throw new Error(`${script} exited ${r.code}, expected ${expectedExit}`)
  return r.stdout
}

function printWhereToLook(s: Stack): void {
  const compose = `docker compose -p ${PROJECT} -f ${path.join(ROOT, 'deployment/docker-compose.prod.yml')} --env-file ${SANDBOX}/.env.production`
  step('Where to look')
  console.log(`  log file        ${s.env.LOG_FILE}`)
  console.log(`  backups         ${s.env.BACKUP_DIR} (backup_index.json; exports/ holds rows a rollback exported)`)
  console.log(`  deployments     ${SANDBOX}/deployments.log (audit events), ${SANDBOX}/artifacts.json`)
  console.log(`  env file        ${SANDBOX}/.env.production`)
  console.log(`  containers      docker ps --filter label=com.docker.compose.project=${PROJECT}`)
  console.log(`  scripts         env $(cat ${SANDBOX}/scripts.env | xargs) scripts/health-check.sh --json`)
  console.log(`  remove it all   ENV_FILE=${SANDBOX}/.env.production ${compose} down --volumes`)
  fs.writeFileSync(path.join(SANDBOX, 'scripts.env'), Object.entries(s.env).map(([k, v]) => `${k}=${v}`).join('\n') + '\n')
}

function step(text: string): void {
  process.stdout.write(`\n== ${text}\n`)
}
