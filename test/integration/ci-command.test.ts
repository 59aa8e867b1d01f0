import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { TOOLKIT_DIR } from '../../lib/core/config.ts'
import { exec } from '../support/scripts.ts'

// scripts/ci-command.sh, the CI key's forced command, as sshd runs it (SSH_ORIGINAL_COMMAND) and
// as a plain shell runs it (arguments), in a copy of the toolkit's layout ($DEPLOY_DIR/deployment/
// scripts) where deploy.sh is a stand-in that prints what it was given. What it allows is the
// whole point: a bash script, so it is run with bash (the e2e runs it behind a real sshd).
let deployDir: string
let script: string

beforeAll(() => {
  deployDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ci-command-'))
  const scripts = path.join(deployDir, 'deployment', 'scripts')
  fs.mkdirSync(scripts, { recursive: true })
  script = path.join(scripts, 'ci-command.sh')
  fs.copyFileSync(path.join(TOOLKIT_DIR, 'scripts', 'ci-command.sh'), script)
  fs.writeFileSync(path.join(scripts, 'deploy.sh'), '#!/bin/sh\necho "deploy.sh $* DEPLOY_DIR=$DEPLOY_DIR TRIGGERED_BY=$TRIGGERED_BY"\n', { mode: 0o755 })
})

const viaSsh = (request: string) => exec(['bash', script], { PATH: process.env.PATH, SSH_ORIGINAL_COMMAND: request }, { inherit: false })

describe('scripts/ci-command.sh (the CI key\'s forced command)', () => {
  it("runs the workflow's request: deploy.sh with the tag and --yes, DEPLOY_DIR from where the toolkit is, triggered_by github_action", async () => {
    const expected = (tag: string) => `deploy.sh ${tag} --yes DEPLOY_DIR=${deployDir} TRIGGERED_BY=github_action\n`
    // exactly what deploy.yml sends (the script named first, each word quoted)
    let r = await viaSsh(`'${deployDir}/deployment/scripts/ci-command.sh' deploy 'v1.2.3' --yes`)
    expect([r.code, r.stdout, r.stderr]).toEqual([0, expected('v1.2.3'), ''])
    r = await viaSsh(`deploy ${'a'.repeat(40)} --yes`)
    expect([r.code, r.stdout]).toEqual([0, expected('a'.repeat(40))])
    // an unrestricted key: the remote shell runs the script with the words as arguments
    r = await exec(['bash', script, 'deploy', 'v1.2.3', '--yes'], { PATH: process.env.PATH }, { inherit: false })
    expect([r.code, r.stdout]).toEqual([0, expected('v1.2.3')])
  })

  it('refuses everything else (exit 126), running nothing: a shell, other scripts, other options, a crafted tag, a second line', async () => {
    for (const request of [
      '',
      'bash',
      'bash -i',
      'docker ps',
      `'${deployDir}/deployment/scripts/restore.sh' latest --yes`,
      'rollback --yes',
      'deploy v1.2.3',
      'deploy v1.2.3 --yes --skip-backup',
      'deploy main --yes',
      "deploy 'v1.2.3; id' --yes",
      'deploy $(id) --yes',
      'deploy v1.2.3 --yes; id',
      'deploy v1.2.3 --yes\nid',
      'scp -t /tmp',
    ]) {
      const r = await viaSsh(request)
      expect(r.code, request).toBe(126)
      expect(r.stdout, request).toBe('')
      expect(r.stderr, request).toMatch(/^ci-command: refused ".*": this key may only run "deploy <tag> --yes"/)
    }
  })
})
