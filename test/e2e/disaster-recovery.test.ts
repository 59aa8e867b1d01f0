import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseEnvFile } from '../../lib/core/env-file.ts'
import { generateKeyPair, identityFileContent } from '../../lib/offsite/key-pair.ts'
import { createDroplet, ensureDropletImage, type Droplet } from '../support/droplet.ts'
import { bridgeGateway } from '../support/pitr-stack.ts'
import { runbookSteps, type RunbookStep } from '../support/runbook.ts'
import { startS3Server, type S3TestServer } from '../support/s3-server.ts'
import { tempDir, type ScriptResult } from '../support/scripts.ts'
import { stopAfterFirstFailure } from '../support/sequence.ts'
import { bedEnv, DB, exec, stackChecksums, type Stack } from '../support/stack.ts'
import { Writer, WRITER_TABLE } from '../support/writer.ts'
import { DEFAULT_SHELL, readWorkflowSteps, runJob, type JobOutcome } from '../support/workflow.ts'

// Issue 13's disaster recovery and issue 16's deploy workflow, end to end on "droplets"
// (test/support/droplet.ts): droplet A is set up with off-site copies on, deploys releases through
// the Deploy workflow's own steps over a real sshd, takes a backup into a real S3 server, and is
// then lost whole. Droplet B is recovered by following docs/runbook.md's disaster-recovery section:
// its commands are read from the page and run in its order, so the page and what works cannot drift.
//
// What differs from a real droplet, and only that: the bucket is s3rver on the docker bridge's
// gateway with a certificate of this run (NODE_EXTRA_CA_CERTS, in the droplet's /etc/environment
// for ssh sessions and given to each command run here); DEPLOY_DIR is not /opt/toogoodtogo (the
// droplets share the host's engine, which resolves bind mounts on the host), so the page's
// /opt/toogoodtogo is read as the droplet's DEPLOY_DIR, and the workflow's DEPLOY_DIR variable is
// set to it; the toolkit is copied in by createDroplet where the page clones it; every droplet
// gets its own host keys at its first boot, as a cloud image does (the image carries one set).
const bed = bedEnv()
const DR = 'The droplet is lost: disaster recovery from off-site'
const WORKFLOW = readWorkflowSteps()
const JOB = ['Check the tag', 'Set up ssh (key and pinned host keys)', 'Run deploy.sh on the droplet', 'Remove the key']
const LOG_FILE = '/var/log/toogoodtogo/deployment.log'
const AUDIT_LOG = '/var/log/toogoodtogo/deployments.log'
const BACKUP_DIR = '/opt/backups/postgres'
const ANSWERS_FILE = '/root/answers.env'
const ANSWERS = {
  TELEGRAM_BOT_TOKEN: '123456:E2E-dr_token', STRIPE_API_KEY: 'sk_test_dr_key',
  ...Object.fromEntries(['BOT_IMAGE', 'POSTGRES_IMAGE', 'REDIS_IMAGE', 'NGINX_IMAGE'].map((key) => [key, fromBed(key)])),
}

interface BackupRecord { backup_id: string; backup_type: string; reason: string | null; offsite: { key: string } | null }
interface AuditEvent { event_id: string; event_type: string; artifact_id: string; status: string; triggered_by: string; error_message: string | null }

let image: string
let s3: S3TestServer
let keys: string
beforeAll(async () => {
  image = ensureDropletImage()
  s3 = await startS3Server({ host: await bridgeGateway() })
  keys = tempDir('ttg-dr-operator-')
})
afterAll(async () => {
  await s3?.stop()
  if (keys) fs.rmSync(keys, { recursive: true, force: true })
})

describe('a droplet lost and recovered from off-site, as docs/runbook.md says; deploys through the GitHub workflow', () => {
  let a: Droplet
  let b: Droplet
  let aGone = false
  // What the operator keeps off the droplet: the identity setup showed once, and the workflow's secrets.
  let identity = ''
  let recipient = ''
  const secrets: Record<string, string> = {}
  let committed: number[] = []
  let atBackup: Record<string, string> = {}
  /** the newest off-site copy that is not a safety backup: what `restore latest` must bring back */
  let newest: BackupRecord | undefined
  const page = pageTracker()
  afterAll(async () => {
    if (a && !aGone) await a.destroy()
    await b?.destroy()
  })
  stopAfterFirstFailure()

  it('1. droplet A: setup-droplet with off-site copies on generates the age key pair and shows the identity once (the operator keeps it), never in the log', async () => {
    a = await createDroplet(image, 'a')
    await firstBoot(a, s3)
    await writeAnswers(a, { ...ANSWERS, APP_VERSION: 'v1.0.0' })
    const r = await a.setup(['--env-file', ANSWERS_FILE, '--yes'], s3.env())
    expect(r.code, r.stdout + r.stderr).toBe(0)
    identity = /^(AGE-SECRET-KEY-1[0-9A-Z]+)$/m.exec(r.stdout)?.[1] ?? ''
    recipient = /Public key \(BACKUP_AGE_RECIPIENT\): (age1[0-9a-z]+)$/m.exec(r.stdout)?.[1] ?? ''
    expect(identity, r.stdout).not.toBe('')
    expect(r.stdout.match(/AGE-SECRET-KEY-1/g)).toHaveLength(1)
    expect(r.stdout).toContain(`Generated the age key pair for off-site copies: public key ${recipient}, identity ${a.deployDir}/backup-age-identity.txt`)
    expect(await a.readFile(LOG_FILE)).not.toContain(identity)
    expect(parseEnvFile(await a.readFile(`${a.deployDir}/.env.production`))).toMatchObject({ OFFSITE_S3_BUCKET: s3.bucket, BACKUP_AGE_RECIPIENT: recipient })
  })

  it("2. droplet A: the Deploy workflow's steps, run against a real sshd, deploy v1.1.0 (exit 0, triggered_by github_action) while the database takes writes: every committed row is there", async () => {
    // The operator's side of "Deploying from GitHub" (README): a key pair for the workflow, its
    // public half given to the deploy user and the droplet's host key pinned, as step 6 of the page does.
    const keyFile = path.join(keys, 'github_deploy_key')
    const made = spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'github-actions-deploy', '-f', keyFile], { encoding: 'utf8' })
    expect(made.status, made.stderr).toBe(0)
    Object.assign(secrets, { DEPLOY_HOST: '127.0.0.1', DEPLOY_SSH_KEY: fs.readFileSync(keyFile, 'utf8'), DEPLOY_KNOWN_HOSTS: await giveWorkflowAccess(a, fs.readFileSync(`${keyFile}.pub`, 'utf8'), step(6)) })

    const writer = new Writer({ project: a.name })
    writer.start()
    const deployed = await runWorkflow(a, 'v1.1.0', secrets)
    committed = await writer.stop()
    expect(deployed.job.steps.map((s) => s.result?.code), output(deployed.job)).toEqual([0, 0, 0, 0])
    expect(deployed.job.code).toBe(0)
    expect(deployed.job.steps[2]?.result?.stdout).toContain('Deployment successful: v1.1.0')
    expect(deployed.summary).toBe('deploy.sh v1.1.0 exited with 0\n')
    expect(deployed.keyLeft).toBe(false)
    expect((await auditEvents(a)).at(-1)).toMatchObject({ event_type: 'deploy', artifact_id: 'v1.1.0', status: 'success', triggered_by: 'github_action' })
    expect(committed.length).toBeGreaterThan(30)
    expect(missing(committed, await writerIds(a))).toEqual([])
  })

  it('3. droplet A: backup.sh copies a backup off-site, encrypted', async () => {
    const r = await a.exec([`${a.toolkitDir}/scripts/backup.sh`, 'manual', '--json'], { env: a.env })
    expect(r.code, r.stderr).toBe(0)
    const taken = JSON.parse(r.stdout) as BackupRecord
    expect(taken.offsite?.key).toBe(`toogoodtogo/${taken.backup_id}.sql.gz.age`)
    expect(fs.readFileSync(s3.objectFile(taken.offsite?.key ?? '')).subarray(0, 21).toString()).toBe('age-encryption.org/v1')
    atBackup = await stackChecksums(database(a))
    expect(atBackup[WRITER_TABLE]).toMatch(new RegExp(`^${committed.length}:`))
  })

  it("4. droplet A: the workflow with v1.2.0 ends with deploy's exit 3, the data as at the backup; its pre-deployment copy is the newest off-site (the rollback's safety copy aside); then A is lost whole", async () => {
    const failed = await runWorkflow(a, 'v1.2.0', secrets)
    expect(failed.job.steps.map((s) => s.result?.code), output(failed.job)).toEqual([0, 0, 3, 0])
    expect(failed.job.code).toBe(3)
    expect(failed.summary).toBe('deploy.sh v1.2.0 exited with 3\n')
    expect(failed.keyLeft).toBe(false)
    // the deploy's event, then the automatic rollback's own, linked to it
    const events = await auditEvents(a)
    const failedDeploy = events.filter((e) => e.event_type === 'deploy').at(-1)
    expect(failedDeploy).toMatchObject({ event_type: 'deploy', artifact_id: 'v1.2.0', triggered_by: 'github_action', status: 'rolled_back', error_message: expect.stringMatching(/^migration failed: /) })
    expect(events.at(-1)).toMatchObject({ event_type: 'rollback', artifact_id: 'v1.1.0', triggered_by: 'automated', rollback_of: failedDeploy?.event_id })
    expect(await stackChecksums(database(a))).toEqual(atBackup)
    expect(JSON.parse(await a.readFile(`${a.deployDir}/artifacts.json`)).current.artifact_id).toBe('v1.1.0')
    // Every backup went off-site, the deploys' own over the ssh session's environment. The newest
    // copy is the rollback's safety copy of the database v1.2.0's migration left (prices x100):
    // `latest` must pass it over for the pre-deployment backup, which holds what A ran.
    const index = JSON.parse(await a.readFile(`${BACKUP_DIR}/backup_index.json`)) as { backups: BackupRecord[] }
    expect(index.backups.map((x) => [x.backup_type, x.reason?.replace(/:.*/, '') ?? null, x.offsite !== null])).toEqual([
      ['pre_deployment', 'before deploying v1.1.0', true], ['manual', null, true], ['pre_deployment', 'before deploying v1.2.0', true], ['manual', 'safety backup', true],
    ])
    newest = index.backups[2]

    await a.destroy()
    aGone = true
    for (const kind of ['container', 'volume', 'network']) {
      const left = spawnSync('docker', [kind, 'ls', '-q', ...(kind === 'container' ? ['-a'] : []), '--filter', `label=com.docker.compose.project=${a.name}`], { encoding: 'utf8' })
      expect(left.stdout.trim(), `${kind}s of ${a.name}`).toBe('')
    }
    expect(spawnSync('docker', ['container', 'inspect', a.name]).status).not.toBe(0)
    expect(fs.existsSync(a.root)).toBe(false)
  })

  it('5. droplet B, runbook steps 1-3: the toolkit, the kept identity put back, setup with the same bucket finds it and derives the public key', async () => {
    b = await createDroplet(image, 'b')
    await firstBoot(b, s3)
    // Step 1's clone: createDroplet put the toolkit where the page clones it.
    expect(page.take(1).commands).toEqual(["git clone <this toolkit's repository> /opt/toogoodtogo/deployment"])
    expect(onDroplet(b, '/opt/toogoodtogo/deployment')).toBe(b.toolkitDir)
    expect(fs.existsSync(path.join(b.toolkitDir, 'scripts', 'setup-droplet.sh'))).toBe(true)

    const pasted = await runPage(b, page.take(2).commands, { input: `${identity}\n` })
    expect(pasted.code, pasted.stderr).toBe(0)
    expect((await b.exec(['stat', '-c', '%a %U', `${b.deployDir}/backup-age-identity.txt`])).stdout.trim()).toBe('600 root')

    // The answers kept from the first setup, APP_VERSION the release A ran last.
    await writeAnswers(b, { ...ANSWERS, APP_VERSION: 'v1.1.0' })
    const setup = await runPage(b, page.take(3).commands, { fill: s3.env() })
    expect(setup.code, setup.stdout + setup.stderr).toBe(0)
    expect(setup.stdout).toContain(`Using the age identity in ${b.deployDir}/backup-age-identity.txt (public key ${recipient}) for off-site copies`)
    expect(setup.stdout).not.toContain('Generated the age key pair')
    expect(setup.stdout).toContain('Setup complete - system ready for production')
    expect(parseEnvFile(await b.readFile(`${b.deployDir}/.env.production`))).toMatchObject({ OFFSITE_S3_BUCKET: s3.bucket, BACKUP_AGE_RECIPIENT: recipient, APP_VERSION: 'v1.1.0' })
    expect((await b.exec(['stat', '-c', '%a %U', `${b.deployDir}/backup-age-identity.txt`])).stdout.trim()).toBe('600 deploy')
  })

  it('6. droplet B: with another identity, restore.sh latest exits 2 naming the key the copy was made for; nothing changed (database, backups, bucket)', async () => {
    const other = await generateKeyPair()
    const file = path.join(b.root, 'not-the-kept-identity.txt')
    fs.writeFileSync(file, identityFileContent(other.identity, other.recipient, 'test'), { mode: 0o600 })
    expect((await b.exec(['chown', 'deploy:deploy', file])).code).toBe(0)
    const before = await recoveryState(b)
    const r = await b.exec([`${b.toolkitDir}/scripts/restore.sh`, 'latest', '--yes'], { env: { ...b.env, BACKUP_AGE_IDENTITY_FILE: file } })
    expect(r.code, r.stdout + r.stderr).toBe(2)
    expect(r.stderr).toContain(`holds the key for ${other.recipient}, not ${recipient}`)
    expect(await recoveryState(b)).toEqual(before)
  })

  it("7. droplet B, runbook steps 4-5: restore.sh latest brings back the newest off-site copy that is not a safety copy (every table as A had it, every committed row); B's first backup goes off-site; status names it", async () => {
    const restored = await runPage(b, page.take(4).commands)
    expect(restored.code, restored.stdout + restored.stderr).toBe(0)
    expect(restored.stdout).toContain(`Off-site backup ${newest?.backup_id} downloaded, decrypted and verified`)
    expect(await stackChecksums(database(b))).toEqual(atBackup)
    expect(missing(committed, await writerIds(b))).toEqual([])

    const [backupCommand = '', statusCommand = ''] = page.take(5).commands
    const first = await runPage(b, [backupCommand])
    expect(first.code, first.stdout + first.stderr).toBe(0)
    const firstId = /Backup complete: \S+\/(\w+)\.sql\.gz$/m.exec(first.stdout)?.[1] ?? 'no backup id in the output'
    const index = JSON.parse(await b.readFile(`${BACKUP_DIR}/backup_index.json`)) as { backups: (BackupRecord & { row_counts: Record<string, number> })[] }
    const mine = index.backups.find((x) => x.backup_id === firstId)
    expect(mine?.offsite?.key).toBe(`toogoodtogo/${firstId}.sql.gz.age`)
    expect(mine?.row_counts).toMatchObject({ [`public.${WRITER_TABLE}`]: committed.length })
    const status = await runPage(b, [statusCommand])
    expect(status.stdout).toMatch(/^Running\s+v1\.1\.0 /m)
    expect(status.stdout).toMatch(new RegExp(`^Backup\\s+${firstId} \\(manual, `, 'm'))
    expect(status.stdout).toMatch(new RegExp(`^Off-site\\s+${firstId} `, 'm'))
    expect(status.stdout).toContain('Needs attention: no restore drill in 8 days\n')
    expect(status.code, status.stdout + status.stderr).toBe(1)
  })

  it('8. droplet B, runbook step 6: the workflow with the old host key pinned is refused (ssh exit 255, nothing deployed); with the new one it reaches B (exit 0)', async () => {
    const [authorize = [], keyscan = []] = page.take(6).blocks
    const given = await runPage(b, authorize, { input: spawnSync('ssh-keygen', ['-y', '-f', path.join(keys, 'github_deploy_key')], { encoding: 'utf8' }).stdout })
    expect(given.code, given.stderr).toBe(0)

    const before = await deployState(b)
    const refused = await runWorkflow(b, 'v1.2.0', secrets)
    expect(refused.job.code, output(refused.job)).toBe(255)
    expect(refused.job.steps[2]?.result?.stderr).toContain('REMOTE HOST IDENTIFICATION HAS CHANGED')
    expect(refused.job.steps[2]?.result?.stderr).toContain('Host key verification failed')
    expect(refused.summary).toBe('deploy.sh v1.2.0 exited with 255\n')
    expect(await deployState(b)).toEqual(before)

    const scanned = await runPage(b, keyscan)
    expect(scanned.code, scanned.stderr).toBe(0)
    expect(scanned.stdout).toMatch(/^127\.0\.0\.1 ssh-ed25519 \S+$/m)
    const again = await runWorkflow(b, 'v1.1.0', { ...secrets, DEPLOY_KNOWN_HOSTS: scanned.stdout })
    expect(again.job.code, output(again.job)).toBe(0)
    expect(again.job.steps[2]?.result?.stdout).toContain('v1.1.0 is already deployed and healthy; nothing to do')
    // Every step of the page ran, in its order.
    expect(page.taken).toEqual(runbookSteps(DR).map((s) => s.number))
  })
})

// ---- the runbook page --------------------------------------------------------------------------

function pageTracker(): { take(n: number): RunbookStep; taken: number[] } {
  const steps = runbookSteps(DR)
  const taken: number[] = []
  return {
    taken,
    take(n) {
      const found = steps.find((s) => s.number === n)
      if (!found) throw new Error(`docs/runbook.md "${DR}" has no step ${n}`)
      taken.push(n)
      return found
    },
  }
}

function step(n: number): RunbookStep {
  const found = runbookSteps(DR).find((s) => s.number === n)
  if (!found) throw new Error(`docs/runbook.md "${DR}" has no step ${n}`)
  return found
}

const cwdOf = new Map<Droplet, string>()

/**
 * The page's commands run as root on the droplet, in one shell, from where the page's last `cd`
 * left it. `fill` gives the page's placeholder assignments (`OFFSITE_S3_BUCKET=my-bucket`) their
 * values for this bed; a placeholder left unfilled fails the test rather than run.
 */
async function runPage(d: Droplet, commands: string[], options: { input?: string; fill?: Record<string, string> } = {}): Promise<ScriptResult> {
  const lines = commands.map((c) => onDroplet(d, c, options.fill))
  const cwd = cwdOf.get(d) ?? '/root'
  for (const line of lines) {
    const cd = /^cd (\S+)$/.exec(line)
    if (cd?.[1]) cwdOf.set(d, cd[1])
  }
  return shellOn(d, ['set -e', `cd ${quote(cwd)}`, ...lines].join('\n'), d.env, options.input ?? '')
}

/** A page command as it runs on this droplet (see the header: paths, root, placeholders). */
function onDroplet(d: Droplet, command: string, fill: Record<string, string> = {}): string {
  const line = command
    .replaceAll('/opt/toogoodtogo', d.deployDir)
    // commands run as root here, and the image has no sudo
    .replace(/^sudo /, '')
    .replace(/\b([A-Z][A-Z0-9_]*)=(\S+)/g, (whole, name: string) => (fill[name] === undefined ? whole : `${name}=${quote(fill[name])}`))
    .replace(/\bNEW_DROPLET_ADDRESS\b/g, '127.0.0.1')
  const placeholder = /<[^>]+>|=\.\.\.|\bmy-bucket\b|digitaloceanspaces\.com/.exec(line)
  if (placeholder) throw new Error(`the page's command holds a placeholder the test does not fill (${placeholder[0]}): ${command}`)
  return line
}

function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`
}

function shellOn(d: Droplet, script: string, env: Record<string, string>, input: string): Promise<ScriptResult> {
  const child = spawn('docker', ['exec', '-i', ...Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]), d.name, 'bash', '-c', script], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  child.stdin.end(input)
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }))
  })
}

// ---- the droplets ------------------------------------------------------------------------------

function fromBed(key: string): string {
  const value = bed[key]
  if (!value) throw new Error(`${key} is missing from test/e2e/bed/.bed.env: run test/e2e/bed/provision.sh`)
  return value
}

/**
 * What a cloud image does at first boot and this bed's image cannot: host keys of its own. And
 * the bed's stand-ins accepted: the bucket's certificate, by every command this test runs (d.env)
 * and by ssh sessions; the application repository, a local clone that is root's (git refuses to
 * read another user's repository unless it is named safe; a real one is fetched over the network).
 */
async function firstBoot(d: Droplet, server: S3TestServer): Promise<void> {
  const ca = path.join(d.root, 'bucket-ca.pem')
  fs.copyFileSync(server.caFile, ca)
  fs.chmodSync(ca, 0o644)
  d.env.NODE_EXTRA_CA_CERTS = ca
  const r = await d.sh([
    'set -euo pipefail',
    'rm -f /etc/ssh/ssh_host_*',
    'ssh-keygen -A',
    'systemctl restart ssh.service',
    `echo 'NODE_EXTRA_CA_CERTS=${ca}' >> /etc/environment`,
    `git config --system --add safe.directory ${quote(fromBed('APP_REPO'))}`,
  ].join('\n'))
  if (r.code !== 0) throw new Error(`first boot of ${d.name}: ${r.stderr}`)
}

async function writeAnswers(d: Droplet, answers: Record<string, string>): Promise<void> {
  const r = await shellOn(d, `umask 077; cat > ${ANSWERS_FILE}`, {}, Object.entries(answers).map(([k, v]) => `${k}=${v}\n`).join(''))
  if (r.code !== 0) throw new Error(`writing ${ANSWERS_FILE}: ${r.stderr}`)
}

/** Step 6 of the page on a droplet: the workflow's public key given to the deploy user; returns the host key line. */
async function giveWorkflowAccess(d: Droplet, publicKey: string, sixth: RunbookStep): Promise<string> {
  const [authorize = [], keyscan = []] = sixth.blocks
  const given = await runPage(d, authorize, { input: publicKey })
  if (given.code !== 0) throw new Error(`authorizing the workflow's key on ${d.name}: ${given.stderr}`)
  const scanned = await runPage(d, keyscan)
  if (scanned.code !== 0 || !scanned.stdout.trim()) throw new Error(`ssh-keyscan on ${d.name}: ${scanned.stderr}`)
  return scanned.stdout
}

/**
 * The job as a runner runs it: each step's script in a file, run by the default shell with the
 * step's env, HOME a directory of its own and GITHUB_STEP_SUMMARY a file. The runner is the
 * droplet itself (ssh to 127.0.0.1): the droplet image has the ssh client the job uses.
 */
async function runWorkflow(d: Droplet, tag: string, jobSecrets: Record<string, string>): Promise<{ job: JobOutcome; summary: string; keyLeft: boolean }> {
  const dir = fs.mkdtempSync(path.join(d.root, 'runner-'))
  const home = path.join(dir, 'home')
  const summary = path.join(dir, 'step-summary.md')
  fs.mkdirSync(home)
  fs.writeFileSync(summary, '')
  let n = 0
  const context = { inputs: { tag }, secrets: jobSecrets, vars: { DEPLOY_DIR: d.deployDir } }
  const job = await runJob(WORKFLOW, JOB, context, { HOME: home, GITHUB_STEP_SUMMARY: summary }, async (script, env) => {
    const file = path.join(dir, `step-${++n}.sh`)
    fs.writeFileSync(file, script)
    return d.exec([...DEFAULT_SHELL, file], { env })
  })
  return { job, summary: fs.readFileSync(summary, 'utf8'), keyLeft: fs.existsSync(path.join(home, '.ssh', 'deploy_key')) }
}

function output(job: JobOutcome): string {
  return job.steps.map((s) => `--- ${s.name}: ${s.result ? `exit ${s.result.code}\n${s.result.stdout}${s.result.stderr}` : 'skipped'}`).join('\n')
}

/** The droplet's database, through its postgres container on the host's engine. */
function database(d: Droplet): Pick<Stack, 'psql'> {
  return {
    async psql(sql) {
      const id = spawnSync('docker', ['ps', '-q', '--filter', `label=com.docker.compose.project=${d.name}`, '--filter', 'label=com.docker.compose.service=postgres'], { encoding: 'utf8' }).stdout.trim()
      if (!id) throw new Error(`no postgres container in ${d.name}`)
      const r = await exec(['docker', 'exec', id, 'psql', '-X', '-U', DB.user, '-d', DB.name, '-Atc', sql])
      if (r.code !== 0) throw new Error(`psql in ${d.name}: ${r.stderr}`)
      return r.stdout.trim()
    },
  }
}

async function writerIds(d: Droplet): Promise<Set<number>> {
  return new Set((await database(d).psql(`SELECT id FROM ${WRITER_TABLE}`)).split('\n').filter(Boolean).map(Number))
}

function missing(ids: number[], found: Set<number>): number[] {
  return ids.filter((id) => !found.has(id))
}

async function auditEvents(d: Droplet): Promise<AuditEvent[]> {
  const lines = (await d.readFile(AUDIT_LOG)).trim().split('\n').map((l) => JSON.parse(l) as AuditEvent)
  // An event's state is its last line.
  return [...new Map(lines.map((e) => [e.event_id, e])).values()]
}

/** What a restore that must change nothing could change: the database, BACKUP_DIR, the bucket. */
async function recoveryState(d: Droplet): Promise<unknown> {
  const files = await d.sh(`find ${BACKUP_DIR} -printf '%p %s %T@\\n' | sort`)
  const bucket = spawnSync('find', [s3.root, '-type', 'f', '-printf', '%P %s\\n'], { encoding: 'utf8' }).stdout.split('\n').sort()
  return { tables: await stackChecksums(database(d)), files: files.stdout, bucket }
}

/** What a deploy changes: the audit log, artifacts.json, the backups, the bot container. */
async function deployState(d: Droplet): Promise<unknown> {
  const bot = spawnSync('docker', ['ps', '-q', '--no-trunc', '--filter', `label=com.docker.compose.project=${d.name}`, '--filter', 'label=com.docker.compose.service=bot'], { encoding: 'utf8' }).stdout.trim()
  return { audit: await d.readFile(AUDIT_LOG), artifacts: await d.readFile(`${d.deployDir}/artifacts.json`), backups: (await d.sh(`ls ${BACKUP_DIR}`)).stdout, bot }
}
