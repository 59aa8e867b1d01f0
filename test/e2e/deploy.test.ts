import { spawn } from 'node:child_process'
import fs from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readLog, ROOT, waitFor } from '../support/scripts.ts'
import { bedEnv, createStack, exec, stackChecksums, type Stack } from '../support/stack.ts'
import { freePort } from '../support/droplet.ts'
import { exportDirsIn, unaccounted, Writer } from '../support/writer.ts'

// deploy and rollback on the real stack, driving the fixture releases: v1.0.0 baseline, v1.1.0 a
// new migration, v1.2.0 a migration that fails after changing data, v1.3.0 never healthy.
//
// The scenarios share one stack and run in the order written, as an operator's history would:
// each starts where the previous one left it (numbers are the issue's, hence out of order). 1 makes
// v1.1.0 current with v1.0.0 before it; 2, 3, 4, 9 and 8 leave v1.1.0 running; 5 rolls back to
// v1.0.0 and deploys v1.1.0 again (its pre-deployment backup is the one 12's first rollback
// restores); 6, 7 and 10 end on v1.1.0; 13 switches to webhook mode (11 back); 11 and 12 add the
// writer and end on v1.0.0. Running one scenario alone needs those before it.
let stack: Stack
let env: Record<string, string>
const received: { path: string; body: string }[] = []
let server: http.Server

beforeAll(async () => {
  server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      received.push({ path: req.url ?? '', body })
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  stack = createStack('v2')
  const appDir = path.join(stack.dir, 'app')
  const clone = await exec(['git', 'clone', '--quiet', bedEnv().APP_REPO!, appDir])
  if (clone.code !== 0) throw new Error(clone.stderr)
  env = {
    APP_DIR: appDir,
    HEALTH_CHECK_TIMEOUT: '45',
    NOTIFY_WEBHOOK_URL: `http://127.0.0.1:${port}/hook`,
    TELEGRAM_NOTIFY_CHAT_ID: '4242',
    TELEGRAM_API_BASE: `http://127.0.0.1:${port}/tg`,
    METRICS_DIR: path.join(stack.dir, 'metrics'),
  }
  fs.mkdirSync(env.METRICS_DIR!)
})
afterAll(async () => {
  await stack?.down()
  server?.close()
})

const deploy = (args: string[], extra: Record<string, string> = {}) => stack.script('deploy', [...args, '--yes'], { ...env, ...extra })
const rollback = (args: string[], extra: Record<string, string> = {}) => stack.script('rollback', [...args, '--yes'], { ...env, ...extra })

function events(): Record<string, unknown>[] {
  const file = path.join(stack.dir, 'deployments.log')
  const latest = new Map<string, Record<string, unknown>>()
  for (const line of fs.readFileSync(file, 'utf8').trim().split('\n')) {
    const e = JSON.parse(line)
    latest.set(e.event_id, e)
  }
  return [...latest.values()]
}

/** The last deploy's event, and the automatic rollback event linked to it (if any). */
function lastDeploy(): { deploy: Record<string, unknown> | undefined; rollback: Record<string, unknown> | undefined } {
  const deploy = events().filter((e) => e.event_type === 'deploy').at(-1)
  return { deploy, rollback: events().find((e) => e.event_type === 'rollback' && e.rollback_of === deploy?.event_id) }
}

function state(): { current: Record<string, unknown> | null; previous: Record<string, unknown> | null } {
  return JSON.parse(fs.readFileSync(path.join(stack.dir, 'artifacts.json'), 'utf8'))
}

async function runningVersion(): Promise<string> {
  return JSON.parse((await stack.script('health-check', ['--json', 'bot'], env)).stdout).services.bot.version
}

describe('deploy', () => {
  it('1. a fresh stack deploys v1.0.0 then v1.1.0: exit 0, contract lines, event with downtime, health 0', async () => {
    const first = await deploy(['v1.0.0'])
    expect(first.stderr).toBe('')
    expect(first.code).toBe(0)
    const second = await deploy(['v1.1.0'])
    expect(second.code).toBe(0)
    const lines = readLog(stack.env.LOG_FILE!).map((l) => l.replace(/^\[[^\]]+\] /, ''))
    const contract = ['INFO: Starting deployment of v1.1.0', 'INFO: Creating pre-deployment backup', 'INFO: Checking out tag v1.1.0', 'INFO: Pulling Docker images', 'INFO: Running database migrations', 'INFO: Migrations applied successfully', 'INFO: Restarting services', 'INFO: Running health checks', 'INFO: All services healthy', 'INFO: Deployment successful: v1.1.0']
    const from = lines.lastIndexOf('INFO: Starting deployment of v1.1.0')
    const positions = contract.map((c) => lines.indexOf(c, from))
    expect(positions.every((p) => p >= 0), JSON.stringify(lines.slice(from))).toBe(true)
    expect([...positions].sort((a, b) => a - b)).toEqual(positions)
    expect(lines.slice(from).some((l) => /^INFO: Backup created: \/.*\.sql\.gz$/.test(l))).toBe(true)
    expect(lines.slice(from).some((l) => /^INFO: Services started \(downtime \d+\.\ds\)$/.test(l))).toBe(true)
    const last = events().at(-1)!
    expect(last).toMatchObject({ event_type: 'deploy', artifact_id: 'v1.1.0', previous_artifact_id: 'v1.0.0', status: 'success', health_check_passed: true, backup_created: true, migration_applied: true, schema_revision_before: '0001', schema_revision_after: '0002' })
    expect(last.downtime_seconds).toEqual(expect.any(Number))
    expect(state().current).toMatchObject({ artifact_id: 'v1.1.0', deployed: true, git_tag: 'v1.1.0' })
    expect(String(state().current!.docker_image_digest)).toMatch(/^sha256:/)
    // the image's build time and size (Deployment Artifact)
    expect(state().current).toMatchObject({ created_at: expect.stringMatching(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/), size_mb: expect.any(Number) })
    expect(state().previous).toMatchObject({ artifact_id: 'v1.0.0', deployed: false })
    expect((await stack.script('health-check', [], env)).code).toBe(0)
    expect(await runningVersion()).toBe('v1.1.0')
  })

  it('2. v1.2.0 whose migration fails after changing data: exit 3, v1.1.0 healthy, every row as before', async () => {
    const before = await stackChecksums(stack)
    const result = await deploy(['v1.2.0'])
    expect(result.code).toBe(3)
    const err = result.stderr
    expect(err).toMatch(/ERROR: Migration failed: .*currencies/)
    expect(err).toMatch(/ERROR: Deployment failed - initiating rollback/)
    expect(result.stdout).toMatch(/INFO: Rolling back to v1.1.0[\s\S]*INFO: Rollback complete/)
    expect(err).toMatch(/ERROR: Deployment failed: v1.2.0\n$/)
    expect(await stackChecksums(stack)).toEqual(before)
    expect(await runningVersion()).toBe('v1.1.0')
    expect((await stack.script('health-check', [], env)).code).toBe(0)
    expect(lastDeploy().deploy).toMatchObject({ artifact_id: 'v1.2.0', status: 'rolled_back' })
    // the automatic rollback is an event of its own, linked to the deploy
    expect(lastDeploy().rollback).toMatchObject({ artifact_id: 'v1.1.0', previous_artifact_id: 'v1.2.0', triggered_by: 'automated', status: 'success', migration_applied: true })
    expect(state().current).toMatchObject({ artifact_id: 'v1.1.0' })
  })

  it('3. v1.3.0 that never becomes healthy: rolled back as soon as its startup error shows, exit 1, v1.1.0 healthy', async () => {
    const result = await deploy(['v1.3.0'], { HEALTH_CHECK_TIMEOUT: '120' })
    expect(result.code).toBe(1)
    expect(result.stderr).toMatch(/ERROR: Health checks failed: the bot reports a failed startup check: .*PAYMENTS_WEBHOOK_SECRET/)
    expect(result.stderr).toMatch(/ERROR: Deployment failed - initiating rollback/)
    expect(result.stdout).toMatch(/INFO: Rolling back to v1.1.0[\s\S]*INFO: Rollback complete/)
    expect(await runningVersion()).toBe('v1.1.0')
    expect((await stack.script('health-check', [], env)).code).toBe(0)
    expect(lastDeploy().deploy).toMatchObject({ artifact_id: 'v1.3.0', status: 'rolled_back' })
    expect(lastDeploy().rollback).toMatchObject({ artifact_id: 'v1.1.0', triggered_by: 'automated', status: 'success', migration_applied: true })
    // What the DeployFailed alert reads, and the release still running.
    const metrics = fs.readFileSync(path.join(env.METRICS_DIR!, 'toogoodtogo_deploy.prom'), 'utf8')
    expect(metrics).toMatch(/^toogoodtogo_deploy_last_outcome\{event="deploy",outcome="rolled_back"\} 1$/m)
    expect(metrics).toMatch(/^toogoodtogo_release_info\{version="v1.1.0"\} 1$/m)
  })

  it('4. deploying v1.1.0 again is a no-op: exit 0, no backup', async () => {
    const backups = fs.readdirSync(stack.env.BACKUP_DIR!).length
    const result = await deploy(['v1.1.0'])
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('v1.1.0 is already deployed and healthy; nothing to do')
    expect(fs.readdirSync(stack.env.BACKUP_DIR!).length).toBe(backups)
    expect(events().at(-1)).toMatchObject({ event_type: 'deploy', artifact_id: 'v1.1.0', status: 'success', backup_created: false })
  })

  it('14. refused at pre-flight or at the confirmation: nothing changes, and the event the run opened says why', async () => {
    // each failure is told once (here on the Slack-compatible channel; the Telegram chat gets the
    // same text), naming the host, the exit code and where to look
    const toldSince = (mark: number) => received.slice(mark).filter((r) => r.path === '/hook').map((r) => r.body).filter((b) => b.includes(' failed on '))
    let mark = received.length
    const noGo = await stack.script('deploy', ['v1.0.0', '--yes'], { ...env, MIN_FREE_DISK_MB: '999999999' })
    expect(noGo.code).toBe(1)
    expect(events().at(-1)).toMatchObject({ event_type: 'deploy', artifact_id: 'v1.0.0', status: 'failed', error_message: expect.stringMatching(/^Pre-flight checks failed \(nothing changed\): disk: /) })
    expect(toldSince(mark)).toHaveLength(1)
    expect(toldSince(mark)[0]).toMatch(/deploy v1\.0\.0 --yes failed on \S+ \(exit 1\): Pre-flight checks failed \(nothing changed\): disk: .*Look further: tail -n 50 /)
    mark = received.length
    const refused = await stack.script('deploy', ['v1.0.0'], env)
    expect(refused.code).toBe(1)
    expect(events().at(-1)).toMatchObject({ event_type: 'deploy', artifact_id: 'v1.0.0', status: 'cancelled', error_message: expect.stringMatching(/^Refusing to continue without confirmation/) })
    // no terminal and no --yes (automation that forgot it): told as well
    expect(toldSince(mark)).toHaveLength(1)
    // the pre-deployment backup fails (no room for it, the pre-flight skipped): exit 2, told once
    mark = received.length
    const noBackup = await stack.script('deploy', ['v1.0.0', '--yes', '--skip-checks'], { ...env, MIN_FREE_DISK_MB: '999999999' })
    expect(noBackup.code, noBackup.stdout + noBackup.stderr).toBe(2)
    expect(events().at(-1)).toMatchObject({ event_type: 'deploy', artifact_id: 'v1.0.0', status: 'failed' })
    expect(toldSince(mark)).toHaveLength(1)
    expect(toldSince(mark)[0]).toMatch(/deploy v1\.0\.0 --yes --skip-checks failed on \S+ \(exit 2\): .*Look further: /)
    expect(await runningVersion()).toBe('v1.1.0')
  })

  it('9. --dry-run prints the plan and changes nothing', async () => {
    // The stack's own images (other test files may build theirs meanwhile): nothing pulled, built or removed.
    const { BOT_IMAGE = '', POSTGRES_IMAGE = '' } = bedEnv()
    const repositories = [BOT_IMAGE, POSTGRES_IMAGE.slice(0, POSTGRES_IMAGE.lastIndexOf(':'))]
    const stackImages = async () => (await exec(['docker', 'images', '--format', '{{.Repository}} {{.Tag}} {{.ID}}'])).stdout.split('\n').filter((l) => repositories.includes(l.split(' ')[0] ?? '')).sort()
    const before = [fs.readFileSync(stack.env.LOG_FILE!, 'utf8'), await stackChecksums(stack), fs.readFileSync(path.join(stack.dir, 'deployments.log'), 'utf8'), fs.readFileSync(path.join(stack.dir, 'artifacts.json'), 'utf8'), await stackImages()]
    const result = await stack.script('deploy', ['v1.0.0', '--dry-run'], env)
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/\[dry-run\] pg_dump|\[dry-run\] docker compose .* exec -T postgres pg_dump/)
    expect(result.stdout).toMatch(/\[dry-run\] git -C .* checkout --detach --force --quiet v1.0.0/)
    expect(result.stdout).toMatch(/\[dry-run\] docker compose .* run --rm -T --no-deps bot alembic upgrade head/)
    expect(result.stdout).toMatch(/\[dry-run\] docker compose .* up -d --remove-orphans/)
    expect(result.stdout).toMatch(/INFO: Dry run complete: nothing was changed\n$/)
    expect(result.stdout).not.toMatch(/Backup created|Migrations applied|Deployment successful/)
    // The log file is the record of what happened: a plan leaves nothing in it.
    const after = [fs.readFileSync(stack.env.LOG_FILE!, 'utf8'), await stackChecksums(stack), fs.readFileSync(path.join(stack.dir, 'deployments.log'), 'utf8'), fs.readFileSync(path.join(stack.dir, 'artifacts.json'), 'utf8'), await stackImages()]
    expect(after).toEqual(before)
    expect(await runningVersion()).toBe('v1.1.0')
  })

  it('5. rollback with no target goes to the last good version; an unknown target exits 2 listing versions', async () => {
    const unknown = await rollback(['v9.9.9'])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toMatch(/Versions that can be rolled back to: v1.0.0/)
    const result = await rollback([])
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    const lines = result.stdout
    expect(lines).toMatch(/INFO: Starting rollback from v1.1.0 to v1.0.0[\s\S]*INFO: Creating safety backup[\s\S]*INFO: Stopping current services[\s\S]*INFO: Checking out v1.0.0[\s\S]*INFO: Restoring database backup[\s\S]*INFO: Starting services[\s\S]*INFO: Health checks passed[\s\S]*INFO: Rollback successful: v1.0.0/)
    expect(await runningVersion()).toBe('v1.0.0')
    expect(await stack.psql('SELECT version_num FROM alembic_version')).toBe('0001')
    expect(state().current).toMatchObject({ artifact_id: 'v1.0.0', rollback_from: 'v1.1.0' })
    // Back to v1.1.0 for the scenarios that follow.
    expect((await deploy(['v1.1.0'])).code).toBe(0)
  })

  it('6. two deploys at once: the second exits 1 naming the first; a stale lock (dead pid) is taken over', async () => {
    const lockFile = path.join(stack.dir, '.deploy.lock')
    fs.writeFileSync(lockFile, JSON.stringify({ pid: process.pid, host: (await import('node:os')).hostname(), command: 'deploy v1.0.0', started_at: new Date().toISOString() }))
    const blocked = await deploy(['v1.0.0'])
    expect(blocked.code).toBe(1)
    expect(blocked.stderr).toMatch(new RegExp(`pid ${process.pid} .*"deploy v1.0.0"`))
    fs.writeFileSync(lockFile, JSON.stringify({ pid: 4_000_000, host: (await import('node:os')).hostname(), command: 'deploy v0', started_at: new Date().toISOString() }))
    const taken = await deploy(['v1.1.0'])
    expect(taken.code).toBe(0)
    expect(taken.stderr).toMatch(/Taking over stale lock .*its process is gone/)
    expect(fs.existsSync(lockFile)).toBe(false)
  })

  it('7. kill -9 during a deploy: the next deploy detects it, settles it and succeeds', async () => {
    const logBefore = fs.readFileSync(stack.env.LOG_FILE!, 'utf8').length
    const child = spawn(path.join(ROOT, 'node_modules/.bin/tsx'), [path.join(ROOT, 'scripts/deploy.ts'), 'v1.0.0', '--yes', '--force'], { env: { ...process.env, ...stack.env, ...env, NO_COLOR: '1' }, stdio: 'ignore' })
    await waitFor(() => fs.readFileSync(stack.env.LOG_FILE!, 'utf8').slice(logBefore).includes('Checking out tag v1.0.0'), 180_000)
    // tsx runs the script in a child node process: kill the whole tree, as kill -9 of the deploy would leave nothing behind either.
    spawn('pkill', ['-9', '-f', 'scripts/deploy.ts v1.0.0'])
    child.kill('SIGKILL')
    await new Promise((r) => setTimeout(r, 1000))
    expect(events().at(-1)).toMatchObject({ artifact_id: 'v1.0.0', status: 'in_progress' })
    const next = await deploy(['v1.1.0', '--force'])
    expect(next.code, next.stderr).toBe(0)
    expect(next.stderr).toMatch(/An earlier deploy of v1.0.0 .* was interrupted; marking it failed/)
    expect(events().find((e) => e.artifact_id === 'v1.0.0' && String(e.error_message).includes('interrupted'))).toBeTruthy()
    expect(await runningVersion()).toBe('v1.1.0')
  })

  it('8. registry stopped: deploy fails after retries and the running version still serves', async () => {
    const registryPid = Number(fs.readFileSync('/var/cache/ttg-e2e/registry.pid', 'utf8'))
    await exec(['docker', 'rmi', `${bedEnv().BOT_IMAGE}:v1.0.0`])
    process.kill(registryPid, 'SIGSTOP')
    try {
      const result = await deploy(['v1.0.0', '--skip-checks'])
      expect(result.code).toBe(1)
      expect(result.stderr).toMatch(/Image pull failed \(attempt 1\/3\)[\s\S]*attempt 2\/3[\s\S]*Pull failed, the running version is untouched/)
    } finally {
      process.kill(registryPid, 'SIGCONT')
    }
    expect(await runningVersion()).toBe('v1.1.0')
    expect((await stack.script('health-check', [], env)).code).toBe(0)
  })

  it('10. notifications reached the local server for success, failure and rollback; a dead URL does not fail a deploy', async () => {
    const texts = received.map((r) => r.body).join('\n')
    expect(texts).toMatch(/Deployed v1.1.0/)
    expect(texts).toMatch(/Deployment of v1.2.0 failed at the migration step: .*currencies/)
    expect(texts).toMatch(/Deployment of v1.3.0 failed at the health step: .*PAYMENTS_WEBHOOK_SECRET.* Rolled back to v1.1.0[.,]/)
    expect(received.some((r) => r.path.startsWith('/tg/bot') && r.path.endsWith('/sendMessage') && r.body.includes('"chat_id":"4242"'))).toBe(true)
    const dead = await deploy(['v1.1.0', '--force'], { NOTIFY_WEBHOOK_URL: 'http://127.0.0.1:1/hook', TELEGRAM_NOTIFY_CHAT_ID: '' })
    expect(dead.code).toBe(0)
    expect(dead.stderr).toMatch(/WARN: webhook notification failed/)
  })
})

describe('webhook mode (nginx in front)', () => {
  it('13. a release that never becomes healthy: rolled back, nginx never replaced and serving throughout', async () => {
    const certs = path.join(stack.dir, 'letsencrypt')
    fs.mkdirSync(path.join(certs, 'live', 'localhost'), { recursive: true })
    const cert = await exec(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost', '-keyout', path.join(certs, 'live/localhost/privkey.pem'), '-out', path.join(certs, 'live/localhost/fullchain.pem')])
    expect(cert.code, cert.stderr).toBe(0)
    const httpsPort = await freePort()
    // Webhook mode by TELEGRAM_WEBHOOK_URL in the environment (it wins over .env.production, for the
    // bot too); DOMAIN is nginx's certificate name. The deploys of 11 and 12 switch back to polling.
    const webhook = { TELEGRAM_WEBHOOK_URL: 'https://bot.example.com/webhook', LETSENCRYPT_DIR: certs, CERTBOT_WEBROOT: path.join(stack.dir, 'webroot'), DOMAIN: 'localhost', NGINX_HTTP_PORT: `127.0.0.1:${await freePort()}`, NGINX_HTTPS_PORT: `127.0.0.1:${httpsPort}` }
    const post = async () => (await exec(['curl', '-sk', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', '-H', 'X-Telegram-Bot-Api-Secret-Token: e2e_webhook_secret', '-d', '{}', `https://127.0.0.1:${httpsPort}/webhook`])).stdout
    try {
      const up = await deploy(['v1.1.0', '--force'], webhook)
      expect(up.code, up.stderr).toBe(0)
      expect(up.stdout).toContain('INFO: Switching from polling to webhook mode')
      expect(await post()).toBe('200')
      const nginx = await containerId('nginx')
      const failed = await deploy(['v1.3.0'], { ...webhook, HEALTH_CHECK_TIMEOUT: '120' })
      expect(failed.code).toBe(1)
      // The running bot is in webhook mode already: blue-green, the old one serving throughout.
      expect(failed.stdout).toContain('Starting v1.3.0 beside the running bot (blue-green)')
      expect(failed.stdout).toMatch(/INFO: Rolling back to v1.1.0[\s\S]*INFO: Rollback complete/)
      expect(await runningVersion()).toBe('v1.1.0')
      expect(lastDeploy().deploy).toMatchObject({ artifact_id: 'v1.3.0', status: 'rolled_back' })
      expect(lastDeploy().rollback).toMatchObject({ artifact_id: 'v1.1.0', triggered_by: 'automated', status: 'success' })
      expect(await containerId('nginx')).toBe(nginx)
      expect(await post()).toBe('200')
    } finally {
      await stack.compose(['--profile', 'webhook', 'rm', '--stop', '--force', 'nginx'], webhook)
    }
  })
})

async function containerId(service: string): Promise<string> {
  return (await exec(['docker', 'ps', '-q', '--filter', `label=com.docker.compose.project=${stack.project}`, '--filter', `label=com.docker.compose.service=${service}`])).stdout.trim()
}

// A bot of another shape that keeps writing while it is deployed, and a dump long enough that rows
// are committed while it runs: after each failure every committed row is in the database or in
// the export the log names.
describe('every committed row is accounted for while a bot writes', () => {
  const fill = () => stack.psql(`CREATE TABLE IF NOT EXISTS e2e_filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS pad FROM generate_series(1, 600000) g`)
  beforeAll(fill)

  it('11. a migration that fails while the bot writes: rolled back, no committed row lost', async () => {
    const writer = new Writer(stack)
    writer.start()
    const result = await deploy(['v1.2.0'])
    const committed = await writer.stop()
    expect(result.code, result.stderr).toBe(3)
    const dirs = exportDirsIn(result.stdout)
    expect(dirs).toHaveLength(1)
    const { lost, onlyExported } = await unaccounted(stack, committed, dirs)
    expect(lost).toEqual([])
    // Rows the backup could not hold existed (written during the dump and after), and were exported.
    expect(onlyExported).toBeGreaterThan(0)
    expect(await runningVersion()).toBe('v1.1.0')
  })

  it('12. rollback.sh restoring a backup taken while the bot wrote: no committed row lost', async () => {
    const writer = new Writer(stack)
    writer.start()
    const back = await rollback([])
    // That backup predates the filler: put it back so the next pre-deployment dump takes a while.
    await fill()
    const runs = [back, await deploy(['v1.1.0']), await rollback([])]
    const committed = await writer.stop()
    for (const r of runs) expect(r.code, r.stderr).toBe(0)
    const dirs = runs.flatMap((r) => exportDirsIn(r.stdout))
    expect(dirs).toHaveLength(2)
    const { lost, onlyExported } = await unaccounted(stack, committed, dirs)
    expect(lost).toEqual([])
    expect(onlyExported).toBeGreaterThan(0)
    expect(await runningVersion()).toBe('v1.0.0')
    expect(events().at(-1)).toMatchObject({ event_type: 'rollback', status: 'success', schema_revision_before: '0002', schema_revision_after: '0001' })
  })
})
