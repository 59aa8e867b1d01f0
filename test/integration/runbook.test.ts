import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { ROOT, runScript } from '../support/scripts.ts'

// docs/runbook.md is read in a hurry: every toolkit command it gives must exist with the options
// it shows, and every unit it names must be one the toolkit installs.
const RUNBOOK = fs.readFileSync(path.join(ROOT, 'docs', 'runbook.md'), 'utf8')

function invocations(): { script: string; args: string[] }[] {
  return [...RUNBOOK.matchAll(/\.\/scripts\/([a-z-]+)\.sh((?: +[^\s`|;)]+)*)/g)].map((m) => ({ script: m[1] ?? '', args: (m[2] ?? '').trim().split(/\s+/).filter(Boolean) }))
}

describe('docs/runbook.md', () => {
  const calls = invocations()

  it('names only scripts that exist', () => {
    expect(calls.length).toBeGreaterThan(20)
    for (const { script } of calls) expect(fs.existsSync(path.join(ROOT, 'scripts', `${script}.sh`)), script).toBe(true)
  })

  it("uses only options each script's --help lists", async () => {
    const scripts = [...new Set(calls.map((c) => c.script))]
    const help = new Map<string, string>()
    await Promise.all(scripts.map(async (s) => {
      const r = await runScript(s, ['--help'], { DEPLOY_DIR: '/nonexistent' })
      expect(r.code, `${s} --help: ${r.stderr}`).toBe(0)
      help.set(s, r.stdout)
    }))
    for (const { script, args } of calls) {
      for (const option of args.filter((a) => a.startsWith('--'))) {
        expect(help.get(script), `${script}.sh ${args.join(' ')}`).toContain(option)
      }
    }
  })

  it('names only journal units the toolkit installs (or the packages it uses)', () => {
    const ours = new Set(fs.readdirSync(path.join(ROOT, 'deployment', 'systemd')))
    const named = [...RUNBOOK.matchAll(/journalctl -u '?([\w.*-]+)'?/g)].map((m) => m[1] ?? '')
    expect(named.length).toBeGreaterThan(5)
    for (const unit of named) {
      if (unit.includes('*') || ['certbot.service', 'prometheus-node-exporter'].includes(unit)) continue
      expect(ours, unit).toContain(unit)
    }
  })
})
