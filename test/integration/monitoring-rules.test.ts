import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { TOOLKIT_DIR } from '../../lib/core/config.ts'
import { metricsFile, recordBackup, recordDeploy, recordDrill, recordHealth, recordOffsiteCopy, recordPhysicalBackup, recordWalArchive } from '../../lib/core/metrics.ts'

// The monitoring configuration checked by the tools that will load it: promtool (Debian package
// `prometheus`) runs the alert rules' unit tests and checks the Prometheus config; amtool
// (`prometheus-alertmanager`) checks the Alertmanager config. .ci/run installs both. A missing
// tool is a failure naming its package, never a skip: these are the only tests of the rules.
const MONITORING = path.join(TOOLKIT_DIR, 'deployment', 'monitoring')

function tool(command: string, pkg: string): string {
  const found = spawnSync('sh', ['-c', `command -v ${command}`], { encoding: 'utf8' })
  if (found.status !== 0) throw new Error(`${command} is not installed: apt-get install ${pkg} (bash .ci/run installs it)`)
  return found.stdout.trim()
}

function run(command: string, args: string[], input?: string): { status: number | null; output: string } {
  const result = spawnSync(command, args, { cwd: MONITORING, encoding: 'utf8', input, timeout: 110_000 })
  return { status: result.status, output: `${result.stdout}${result.stderr}` }
}

describe('monitoring configuration', () => {
  it('promtool test rules: every alert fires when it should and stays quiet otherwise', () => {
    const promtool = tool('promtool', 'prometheus')
    const result = run(promtool, ['test', 'rules', 'rules/toogoodtogo.test.yml'])
    expect(result.output).toContain('SUCCESS')
    expect(result.status, result.output).toBe(0)
  })

  it('every alert rule has a unit test, firing at least once', () => {
    const rules = fs.readFileSync(path.join(MONITORING, 'rules', 'toogoodtogo.rules.yml'), 'utf8')
    const tests = fs.readFileSync(path.join(MONITORING, 'rules', 'toogoodtogo.test.yml'), 'utf8')
    const alerts = [...rules.matchAll(/^\s*- alert: (\w+)$/gm)].map((m) => m[1] ?? '')
    expect(alerts.length).toBeGreaterThanOrEqual(16)
    for (const alert of alerts) {
      // a firing case names the alert and then expects labels
      expect(tests, alert).toMatch(new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`))
      expect(tests, alert).toMatch(new RegExp(`alertname: ${alert}\\n\\s+exp_alerts: \\[\\]`))
    }
  })

  it('promtool check config accepts prometheus.yml and its rule file', () => {
    const result = run(tool('promtool', 'prometheus'), ['check', 'config', 'prometheus.yml'])
    expect(result.status, result.output).toBe(0)
    expect(result.output).toContain('1 rule files found')
  })

  it('amtool check-config accepts alertmanager.yml', () => {
    const result = run(tool('amtool', 'prometheus-alertmanager'), ['check-config', 'alertmanager.yml'])
    expect(result.status, result.output).toBe(0)
    expect(result.output).toContain('3 receivers')
  })

  it("the toolkit's metrics files pass promtool check metrics and name what the rules read", () => {
    const promtool = tool('promtool', 'prometheus')
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'metrics-'))
    try {
      const t = { METRICS_DIR: dir }
      const at = new Date()
      recordBackup(t, { type: 'scheduled', finishedAt: at, sizeBytes: 1024, durationSeconds: 3 })
      recordOffsiteCopy(t, { finishedAt: at, sizeBytes: 2048 })
      recordDrill(t, { finishedAt: at, passed: true })
      recordDeploy(t, { event: 'deploy', outcome: 'success', finishedAt: at, downtimeSeconds: 2.5, running: { version: 'v1.2.0', deployedAt: at } })
      recordWalArchive(t, at)
      recordPhysicalBackup(t, 1, at)
      recordHealth(t, at, [{ service: 'bot', healthy: true }])
      const rules = fs.readFileSync(path.join(MONITORING, 'rules', 'toogoodtogo.rules.yml'), 'utf8')
      const published = new Set<string>()
      for (const name of ['backup_scheduled', 'offsite', 'drill', 'deploy', 'wal', 'physical_backup_repo1', 'health']) {
        const text = fs.readFileSync(metricsFile(t, name), 'utf8')
        const result = run(promtool, ['check', 'metrics'], text)
        // check metrics lints too (e.g. a gauge named *_total); a lint finding is printed, exit 3
        expect(result.status, `${name}: ${result.output}`).toBe(0)
        for (const m of text.matchAll(/^(toogoodtogo_\w+)/gm)) published.add(m[1] ?? '')
      }
      for (const used of new Set([...rules.matchAll(/\b(toogoodtogo_[a-z_]*[a-z])\b/g)].map((m) => m[1] ?? ''))) {
        expect(published, `the rules read ${used}, which nothing publishes`).toContain(used)
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  })
})
