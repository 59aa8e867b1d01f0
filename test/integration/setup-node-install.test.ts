import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { ROOT } from '../support/scripts.ts'

// setup-droplet.sh's Node decision, on its own: in the e2e test Node is mounted from the host, so
// the install path never runs there. Fake `node` and `apt-cache` on PATH play the droplet.
const WRAPPER = path.join(ROOT, 'scripts/setup-droplet.sh')

interface FakeHost {
  /** what `node --version` prints; null: no node on PATH */
  node: string | null
  /** apt's candidate for nodejs; null: apt knows none */
  aptCandidate: string | null
}

function fakeBin(host: FakeHost): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-fake-bin-'))
  const write = (name: string, body: string) => fs.writeFileSync(path.join(dir, name), `#!/bin/bash\n${body}\n`, { mode: 0o755 })
  if (host.node) write('node', `echo ${host.node}`)
  write('apt-cache', host.aptCandidate ? `printf 'nodejs:\\n  Installed: (none)\\n  Candidate: %s\\n' '${host.aptCandidate}'` : 'printf "nodejs:\\n  Installed: (none)\\n  Candidate: (none)\\n"')
  // Anything that would change the machine only records that it was called.
  for (const tool of ['apt-get', 'curl', 'gpg', 'npm', 'install']) write(tool, `echo "CALLED ${tool} $*" >>"${dir}/calls"`)
  write('id', 'echo 0')
  return dir
}

/** Sources the wrapper (its main does not run) and evaluates `script` with the fake PATH first. */
function inWrapper(host: FakeHost, script: string): { stdout: string; stderr: string; status: number | null; calls: string } {
  const bin = fakeBin(host)
  // Only the fakes and the basics: the machine's own node must not answer.
  const r = spawnSync('/bin/bash', ['-c', `source "${WRAPPER}"; ${script}`], { encoding: 'utf8', env: { PATH: `${bin}:${coreutilsDir()}`, HOME: os.tmpdir() } })
  const calls = fs.existsSync(path.join(bin, 'calls')) ? fs.readFileSync(path.join(bin, 'calls'), 'utf8') : ''
  return { stdout: r.stdout, stderr: r.stderr, status: r.status, calls }
}

/** A directory with the few standard tools the wrapper uses (date, dirname, readlink, awk, sed), without node. */
function coreutilsDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-tools-'))
  for (const tool of ['date', 'dirname', 'readlink', 'awk', 'sed', 'cat', 'printf', 'env']) {
    const found = spawnSync('/bin/sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim()
    if (found.startsWith('/')) fs.symlinkSync(found, path.join(dir, tool))
  }
  return dir
}

describe('node_plan: which Node setup-droplet.sh uses', () => {
  it.each([
    ['20', '18', 'use-installed'],
    ['22', '', 'use-installed'],
    ['18', '18', 'install-nodesource'],
    ['', '18', 'install-nodesource'],
    ['', '', 'install-nodesource'],
    ['', '20', 'install-debian'],
    ['16', '22', 'install-debian'],
  ])('installed %s, Debian offers %s -> %s', (installed, candidate, plan) => {
    expect(inWrapper({ node: null, aptCandidate: null }, `node_plan "${installed}" "${candidate}" 20`).stdout.trim()).toBe(plan)
  })
})

describe('what the wrapper reads from the machine', () => {
  it('the installed major from `node --version`, nothing without node', () => {
    expect(inWrapper({ node: 'v18.19.1', aptCandidate: null }, 'installed_node_major').stdout.trim()).toBe('18')
    expect(inWrapper({ node: 'v20.20.2', aptCandidate: null }, 'installed_node_major').stdout.trim()).toBe('20')
    expect(inWrapper({ node: null, aptCandidate: null }, 'installed_node_major').stdout.trim()).toBe('')
  })
  it("apt's candidate major, epoch and Debian revision stripped", () => {
    expect(inWrapper({ node: null, aptCandidate: '18.20.4+dfsg-1~deb12u2' }, 'apt_candidate_node_major').stdout.trim()).toBe('18')
    expect(inWrapper({ node: null, aptCandidate: '1:20.19.2+dfsg-1' }, 'apt_candidate_node_major').stdout.trim()).toBe('20')
    expect(inWrapper({ node: null, aptCandidate: null }, 'apt_candidate_node_major').stdout.trim()).toBe('')
  })
})

describe('ensure_node under --dry-run says what it would install and installs nothing', () => {
  it('Debian 12 with Node 18 offered: NodeSource, named with its repository', () => {
    const r = inWrapper({ node: null, aptCandidate: '18.20.4+dfsg-1~deb12u2' }, 'dry_run=1; ensure_node')
    expect(r.status).toBe(0)
    expect(r.stdout).toMatch(/INFO: Installing Node\.js 22 from NodeSource \(apt repository https:\/\/deb\.nodesource\.com\/node_22\.x.*this Debian's own nodejs is 18, older than 20/)
    expect(r.stdout).toContain('[dry-run] curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --dearmor --yes -o /etc/apt/keyrings/nodesource.gpg')
    expect(r.stdout).toContain('[dry-run] env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs')
    expect(r.stdout).toContain('Dry run: Node.js is not installed yet')
    expect(r.calls).toBe('')
  })
  it("Debian 13 (Node 20 offered): Debian's own nodejs and npm", () => {
    const r = inWrapper({ node: 'v18.19.1', aptCandidate: '20.19.2+dfsg-1' }, 'dry_run=1; ensure_node')
    expect(r.stdout).toContain('Node.js 18 on PATH is older than 20')
    expect(r.stdout).toContain("Installing Node.js from Debian's own packages (nodejs 20, npm)")
    expect(r.stdout).toContain('[dry-run] env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm')
    expect(r.calls).toBe('')
  })
  it('Node 20 already there: nothing to do, nothing said', () => {
    const r = inWrapper({ node: 'v20.11.1', aptCandidate: '18.20.4' }, 'dry_run=1; ensure_node; echo done')
    expect(r.stdout.trim()).toBe('done')
  })
  it('for real, it runs the NodeSource steps in order', () => {
    const r = inWrapper({ node: null, aptCandidate: '18.20.4' }, 'dry_run=0; NODESOURCE_KEYRING=/tmp/ttg-none/k.gpg; NODESOURCE_LIST=/dev/null; ensure_node')
    // The fakes install nothing, so it ends by saying Node is still missing.
    expect(r.status).toBe(1)
    expect(r.stderr).toContain('Node.js 20+ is still not on PATH after the installation (found: none)')
    const calls = r.calls.trim().split('\n')
    expect(calls.slice(0, 3)).toEqual(['CALLED apt-get update -q', 'CALLED apt-get install -y -q ca-certificates curl gnupg', 'CALLED install -d -m 0755 /tmp/ttg-none'])
    // The key download and its dearmoring are one pipe: they start together.
    expect(calls.slice(3, 5).sort()).toEqual(['CALLED curl -fsSL --retry 3 https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key', 'CALLED gpg --dearmor --yes -o /tmp/ttg-none/k.gpg'])
    expect(calls.slice(5)).toEqual(['CALLED apt-get update -q', 'CALLED apt-get install -y -q nodejs'])
  })
})
