import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { ROOT } from '../support/scripts.ts'

// `--env-file` reaches setup-droplet through its launchers: node itself reads `--env-file FILE`
// anywhere on its command line (even after the script) and exits 9 on a missing FILE before any
// of the script's code runs. Real processes, a dry run, nothing outside a temp directory touched.
function launch(argv: string[]): { status: number | null; stdout: string; stderr: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-argv-'))
  const env = { PATH: process.env.PATH ?? '', HOME: dir, NO_COLOR: '1', DEPLOY_DIR: path.join(dir, 'opt'), BACKUP_DIR: path.join(dir, 'backups'), LOG_FILE: path.join(dir, 'log/deployment.log') }
  const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env, timeout: 60_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

const MISSING = '/nonexistent/ttg-answers.env'

describe('setup-droplet --env-file FILE through its launchers', () => {
  it('node alone swallows it (why the launchers pass --): exit 9, node\'s own message', () => {
    const r = launch(['node', '--import', path.join(ROOT, 'node_modules/tsx/dist/loader.mjs'), path.join(ROOT, 'scripts/setup-droplet.ts'), '--env-file', MISSING, '--dry-run'])
    expect(r.status).toBe(9)
    expect(r.stderr).toContain(`node: ${MISSING}: not found`)
  })

  it.each([
    ['scripts/run.sh', ['bash', path.join(ROOT, 'scripts/run.sh'), 'setup-droplet']],
    ['scripts/setup-droplet.sh', ['bash', path.join(ROOT, 'scripts/setup-droplet.sh')]],
    ['tsx scripts/setup-droplet.ts --', [path.join(ROOT, 'node_modules/.bin/tsx'), path.join(ROOT, 'scripts/setup-droplet.ts'), '--']],
  ])('%s: a missing file is the script\'s own error (exit 1)', (_name, head) => {
    const r = launch([...head, '--env-file', MISSING, '--dry-run'])
    expect(r.stderr).not.toContain('node:')
    expect(r.stderr).toMatch(new RegExp(`ERROR: --env-file ${MISSING}: no such file`))
    expect(r.status).toBe(1)
  })

  it('scripts/run.sh: an existing file is read as the answers', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-argv-'))
    const answers = path.join(dir, 'answers.env')
    // A bad value proves the file was read by the script (and named in its own message).
    fs.writeFileSync(answers, 'DEPLOY_USER=root\n')
    const r = launch(['bash', path.join(ROOT, 'scripts/run.sh'), 'setup-droplet', '--env-file', answers, '--dry-run'])
    expect(r.stderr).toContain('ERROR: Invalid DEPLOY_USER="root": must not be root')
    expect(r.status).toBe(1)
  })
})

describe('setup-droplet through scripts/run.sh: the entry maps the outcome to the exit code', () => {
  it('a finished host (the completion marker) exits 2, changing nothing', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-argv-'))
    fs.mkdirSync(path.join(dir, 'opt'))
    fs.writeFileSync(path.join(dir, 'opt/.setup-complete'), '{"completed_at":"2026-01-01T00:00:00Z"}\n')
    const env = { PATH: process.env.PATH ?? '', HOME: dir, NO_COLOR: '1', DEPLOY_DIR: path.join(dir, 'opt'), BACKUP_DIR: path.join(dir, 'backups'), LOG_FILE: path.join(dir, 'log/deployment.log') }
    const r = spawnSync('bash', [path.join(ROOT, 'scripts/run.sh'), 'setup-droplet', '--dry-run'], { encoding: 'utf8', env, timeout: 60_000 })
    expect(r.stdout).toContain('INFO: Existing configuration found')
    expect(r.status).toBe(2)
    expect(fs.readdirSync(dir).sort()).toEqual(['opt'])
  })
})
