import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { writeFileAtomic } from '../../lib/core/atomic-file.ts'
import { deployUserFor, reexecArgv } from '../../lib/core/deploy-user.ts'
import { setEnvValue } from '../../lib/core/env-file.ts'

const isRoot = process.getuid?.() === 0

describe('a replaced file keeps its owner, group and mode', () => {
  it('writeFileAtomic keeps a non-default mode (and, as root, another user\'s ownership)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-own-'))
    const file = path.join(dir, 'state.json')
    fs.writeFileSync(file, 'old', { mode: 0o640 })
    fs.chmodSync(file, 0o640)
    if (isRoot) fs.chownSync(file, 4321, 4322)
    writeFileAtomic(file, 'new', 0o600)
    const st = fs.statSync(file)
    expect(fs.readFileSync(file, 'utf8')).toBe('new')
    expect((st.mode & 0o777).toString(8)).toBe('640')
    if (isRoot) expect([st.uid, st.gid]).toEqual([4321, 4322])
  })

  it('a new file gets the mode asked for', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-own-')), 'index.json')
    writeFileAtomic(file, '{}', 0o600)
    expect((fs.statSync(file).mode & 0o777).toString(8)).toBe('600')
  })

  it.runIf(isRoot)('setEnvValue as root keeps the deploy user owning .env.production', () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-own-')), '.env.production')
    fs.writeFileSync(file, 'APP_VERSION=v1.0.0\n', { mode: 0o600 })
    fs.chownSync(file, 4321, 4321)
    setEnvValue(file, 'APP_VERSION', 'v1.1.0')
    const st = fs.statSync(file)
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([4321, 4321, 0o600])
    expect(fs.readFileSync(file, 'utf8')).toBe('APP_VERSION=v1.1.0\n')
  })
})

describe('root runs on the deploy user\'s behalf', () => {
  it.runIf(isRoot)('the owner of DEPLOY_DIR is the user to become; a root-owned DEPLOY_DIR changes nothing', () => {
    const mine = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-dd-'))
    expect(deployUserFor(mine)).toBeNull()
    const theirs = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-dd-'))
    fs.chownSync(theirs, 4321, 4322)
    expect(deployUserFor(theirs)).toMatchObject({ uid: 4321, gid: 4322 })
    expect(deployUserFor('/nonexistent/ttg')).toBeNull()
  })

  it('re-runs the same node, loader and arguments under setpriv', () => {
    const argv = reexecArgv({ name: 'deploy', uid: 1000, gid: 1001, home: '/home/deploy' }, '/usr/bin/node', ['--import', '/t/loader.mjs'], ['/usr/bin/node', '/t/scripts/deploy.ts', 'v1.2.0', '--yes'])
    expect(argv).toEqual(['setpriv', '--reuid=1000', '--regid=1001', '--init-groups', '--', '/usr/bin/node', '--import', '/t/loader.mjs', '/t/scripts/deploy.ts', 'v1.2.0', '--yes'])
  })
})
