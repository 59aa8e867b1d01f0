import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { exec, ROOT, tempDir } from '../support/scripts.ts'

// docs/runbook.md "Changing a script on the droplet", done as an operator does it: one `$` line
// added to a copy of scripts/deploy.ts, run with the toolkit's own tsx. The line runs, is logged
// with its secret redacted, and under --dry-run is printed and not run.
const TOKEN = '123456:hotfix-test-token-value'
let toolkit: string
let work: string

beforeAll(() => {
  work = tempDir('ttg-hotfix-')
  toolkit = path.join(work, 'toolkit')
  for (const part of ['scripts', 'lib', 'package.json', 'tsconfig.json', 'tsconfig.scripts.json']) fs.cpSync(path.join(ROOT, part), path.join(toolkit, part), { recursive: true })
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(toolkit, 'node_modules'))
  const deployTs = path.join(toolkit, 'scripts/deploy.ts')
  const source = fs.readFileSync(deployTs, 'utf8')
  const firstStep = 'export async function deploy(ctx: Context, opts: DeployOptions): Promise<void> {\n'
  expect(source).toContain(firstStep)
  const hotfixed = source
    // a function: in a replacement string `$`` would mean the text before the match
    .replace(firstStep, () => `${firstStep}  await $\`printf %s \${process.env.TELEGRAM_BOT_TOKEN ?? ''} > \${path.join(ctx.cfg.DEPLOY_DIR, 'hotfix-ran')}\`\n`)
  fs.writeFileSync(deployTs, hotfixed.includes("from '../lib/core/shell.ts'") ? hotfixed : `import { $ } from '../lib/core/shell.ts'\n${hotfixed}`)
  fs.mkdirSync(path.join(work, 'deploy'))
  fs.writeFileSync(path.join(work, 'deploy/.env.production'), `TELEGRAM_BOT_TOKEN=${TOKEN}\nPOSTGRES_PASSWORD=hotfix-pg-password\n`, { mode: 0o600 })
})
afterAll(() => fs.rmSync(work, { recursive: true, force: true }))

function runDeploy(args: string[]) {
  const env = { PATH: process.env.PATH, HOME: process.env.HOME, NO_COLOR: '1', DEPLOY_DIR: path.join(work, 'deploy'), LOG_FILE: path.join(work, 'logs/deployment.log'), TELEGRAM_BOT_TOKEN: TOKEN, DATABASE_URL: 'postgresql://app:hotfix-pg-password@127.0.0.1:9/app', APP_SERVICES: '' }
  return exec([path.join(toolkit, 'node_modules/.bin/tsx'), path.join(toolkit, 'scripts/deploy.ts'), ...args], env, { inherit: false })
}

describe('a hotfix line in deploy.ts', () => {
  it('type-checks with the toolkit\'s own tsc, as the runbook says', async () => {
    const r = await exec([path.join(toolkit, 'node_modules/.bin/tsc'), '--noEmit', '-p', path.join(toolkit, 'tsconfig.scripts.json')])
    expect(r.stdout + r.stderr).toBe('')
    expect(r.code).toBe(0)
  })

  it('under --dry-run is printed with the secret redacted, and does not run', async () => {
    const r = await runDeploy(['v9.9.9', '--dry-run', '--yes'])
    expect(r.stdout).toMatch(/\[dry-run\] printf %s \*\*\* > .*hotfix-ran/)
    expect(r.stdout + r.stderr).not.toContain(TOKEN)
    expect(fs.existsSync(path.join(work, 'deploy/hotfix-ran'))).toBe(false)
  })

  it('runs, and LOG_FILE has the command with the secret redacted, its exit code and duration', async () => {
    await runDeploy(['v9.9.9', '--yes'])
    expect(fs.readFileSync(path.join(work, 'deploy/hotfix-ran'), 'utf8')).toBe(TOKEN)
    const logged = fs.readFileSync(path.join(work, 'logs/deployment.log'), 'utf8')
    expect(logged).toMatch(/DEBUG: \$ printf %s \*\*\* > .*hotfix-ran/)
    expect(logged).toMatch(/DEBUG: exit 0 in \d+ ms: printf %s \*\*\*/)
    expect(logged).not.toContain(TOKEN)
  })
})
