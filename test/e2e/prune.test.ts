import { spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readLog } from '../support/scripts.ts'
import { freePort } from '../support/droplet.ts'
import { stopAfterFirstFailure } from '../support/sequence.ts'
import { bedEnv, createStack, exec, type Stack } from '../support/stack.ts'

// Old releases pruned after each deploy (lib/release/prune.ts), on a registry of this file's own:
// the bed's registry and its ttg-bot images are shared with every other e2e file, and this one
// removes images and stops its registry. Five releases: v1.0.0 and v1.1.0 of the fixture bot, and
// v1.1.1 to v1.1.3, the same commit and image as v1.1.0 under new tags.
const TAGS = ['v1.0.0', 'v1.1.0', 'v1.1.1', 'v1.1.2', 'v1.1.3']
let stack: Stack
let registry: ChildProcess | null = null
let repository: string
let env: Record<string, string>

async function must(argv: string[], extra: Record<string, string> = {}): Promise<string> {
  const r = await exec(argv, extra)
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}):\n${r.stdout}\n${r.stderr}`)
  return r.stdout
}

async function startRegistry(dir: string): Promise<string> {
  const address = `127.0.0.1:${await freePort()}`
  const config = path.join(dir, 'registry.yml')
  fs.writeFileSync(config, `version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/storage\nhttp:\n  addr: ${address}\n`)
  registry = spawn('docker-registry', ['serve', config], { stdio: 'ignore' })
  for (let i = 0; i < 40; i++) {
    if ((await exec(['curl', '-fsS', `http://${address}/v2/`])).code === 0) return address
    await new Promise((r) => setTimeout(r, 250))
  }
  throw new Error(`docker-registry did not answer on ${address}`)
}

function stopRegistry(): void {
  if (registry?.pid) process.kill(registry.pid, 'SIGTERM')
  registry = null
}

async function localTags(): Promise<string[]> {
  return (await must(['docker', 'image', 'ls', '--format', '{{.Tag}}', repository])).split('\n').filter(Boolean).sort()
}

beforeAll(async () => {
  const bed = bedEnv()
  stack = createStack('v2')
  repository = `${await startRegistry(stack.dir)}/ttg-bot-prune`
  for (const tag of ['v1.0.0', 'v1.1.0']) await must(['docker', 'pull', '--quiet', `${bed.BOT_IMAGE}:${tag}`])
  for (const tag of TAGS) {
    await must(['docker', 'tag', `${bed.BOT_IMAGE}:${tag === 'v1.0.0' ? 'v1.0.0' : 'v1.1.0'}`, `${repository}:${tag}`])
    await must(['docker', 'push', '--quiet', `${repository}:${tag}`])
    // deploys pull for real
    await must(['docker', 'image', 'rm', `${repository}:${tag}`])
  }
  // the application repository with the extra tags: deploy fetches with --prune, so they live in its origin
  const origin = path.join(stack.dir, 'origin.git')
  await must(['git', 'clone', '--quiet', '--bare', bed.APP_REPO ?? '', origin])
  for (const tag of TAGS.slice(2)) await must(['git', '-C', origin, 'tag', tag, 'v1.1.0^{commit}'])
  const appDir = path.join(stack.dir, 'app')
  await must(['git', 'clone', '--quiet', origin, appDir])
  const envFile = path.join(stack.dir, '.env.production')
  fs.writeFileSync(envFile, fs.readFileSync(envFile, 'utf8').replace(/^BOT_IMAGE=.*$/m, `BOT_IMAGE=${repository}`))
  env = { APP_DIR: appDir, HEALTH_CHECK_TIMEOUT: '60', KEEP_RELEASES: '3', RELEASE_RETENTION_DAYS: '0' }
}, 600_000)

afterAll(async () => {
  stopRegistry()
  await stack?.down()
  for (const tag of TAGS) await exec(['docker', 'image', 'rm', `${repository}:${tag}`])
})

describe('old releases pruned after a deploy', () => {
  stopAfterFirstFailure()

  it('1. after five deploys only the last three release images remain; a stopped one-off container goes too', async () => {
    for (const tag of TAGS) {
      // a `compose run` killed before its --rm: a stopped one-off container of this project
      if (tag === 'v1.1.3') await stack.compose(['run', '-T', '--no-deps', '--entrypoint', 'true', 'bot'], { APP_VERSION: 'v1.1.2' })
      const r = await stack.script('deploy', [tag, '--yes'], env)
      expect(r.code, r.stdout + r.stderr).toBe(0)
    }
    expect(await localTags()).toEqual(['v1.1.1', 'v1.1.2', 'v1.1.3'])
    const log = readLog(stack.env.LOG_FILE ?? '').join('\n')
    expect(log).toMatch(/INFO: Pruned old release image\(s\) v1\.0\.0 \(keeping the last 3/)
    expect(log).toMatch(/INFO: Pruned old release image\(s\) v1\.1\.0 \(keeping the last 3 and those used within 0 days\), 1 stopped one-off container\(s\)/)
    expect(log).not.toMatch(/Pruning was incomplete/)
    const oneOffs = await must(['docker', 'ps', '--all', '--quiet', '--filter', `label=com.docker.compose.project=${stack.project}`, '--filter', 'label=com.docker.compose.oneoff=True'])
    expect(oneOffs.trim()).toBe('')
  })

  it("2. status shows Docker's disk use", async () => {
    const r = await stack.script('status', [], env)
    expect(r.stdout).toMatch(/^Docker {7}images \S+ \(\S+ reclaimable\), containers .*, volumes .*, build cache /m)
  })

  it('3. with the registry gone, a rollback to the previous release runs its kept image (no pull)', async () => {
    stopRegistry()
    const r = await stack.script('rollback', ['--yes'], env)
    expect(r.code, r.stdout + r.stderr).toBe(0)
    const log = readLog(stack.env.LOG_FILE ?? '')
    const from = log.map((l) => l.includes('Starting rollback')).lastIndexOf(true)
    expect(log[from]).toContain('from v1.1.3 to v1.1.2')
    expect(log.slice(from).join('\n')).toContain(`Using ${repository}:v1.1.2 kept on this host (no pull)`)
    const health = JSON.parse((await stack.script('health-check', ['--json', 'bot'], env)).stdout) as { services: { bot: { status: string } } }
    expect(health.services.bot.status).toBe('healthy')
    const bot = (await must(['docker', 'ps', '--quiet', '--filter', `label=com.docker.compose.project=${stack.project}`, '--filter', 'label=com.docker.compose.service=bot'])).trim()
    expect((await must(['docker', 'inspect', '--format', '{{.Config.Image}}', bot])).trim()).toBe(`${repository}:v1.1.2`)
  })
})
