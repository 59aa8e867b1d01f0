import fs from 'node:fs'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { writeFileAtomic } from '../../lib/core/atomic-file.ts'
import { configureLog, log } from '../../lib/core/log.ts'
import { publishMetrics } from '../../lib/core/metrics.ts'
import { makeDirNoFollow } from '../../lib/core/no-follow.ts'
import { appendEvent, newEvent, writeState } from '../../lib/release/deploy-state.ts'
import { ensureDir, handOver, installFileAs } from '../../lib/setup/hand-over.ts'
import { tempDir } from '../support/scripts.ts'

// Issue 21, item 3: root writes into a directory another user owns (DEPLOY_DIR, BACKUP_DIR, the
// log and metrics directories) and that user plants a symbolic link at each name root is about to
// write, pointing at a root-only file or directory. Run as root, with real files: every write is
// refused or lands beside the link, and the target keeps its bytes, owner and mode.
const DEPLOY = 65534 // nobody: stands in for the deploy user
const root = process.getuid?.() === 0

let dir: string
let owned: string
let secret: string
let secretDir: string

/** A link the deploy user made: owned by it, in its directory. */
function plant(at: string, target: string): void {
  fs.symlinkSync(target, at)
  fs.lchownSync(at, DEPLOY, DEPLOY)
}

function untouched(): void {
  expect(fs.readFileSync(secret, 'utf8')).toBe('root only\n')
  const file = fs.statSync(secret)
  expect([file.uid, file.gid, file.mode & 0o7777]).toEqual([0, 0, 0o600])
  const d = fs.statSync(secretDir)
  expect([d.uid, d.gid, d.mode & 0o7777]).toEqual([0, 0, 0o700])
  expect(fs.readdirSync(secretDir)).toEqual([])
}

beforeEach(() => {
  dir = tempDir('no-follow-')
  fs.chmodSync(dir, 0o755)
  secret = path.join(dir, 'shadow')
  fs.writeFileSync(secret, 'root only\n', { mode: 0o600 })
  secretDir = path.join(dir, 'root-only')
  fs.mkdirSync(secretDir, { mode: 0o700 })
  owned = path.join(dir, 'deploy')
  fs.mkdirSync(owned, { mode: 0o750 })
  fs.chownSync(owned, DEPLOY, DEPLOY)
})

afterEach(() => {
  configureLog({ file: null })
  vi.restoreAllMocks()
})

describe.runIf(root)('root never follows a link the deploy user planted', () => {
  it('the log file: the line is not written through it, a warning names it', () => {
    const file = path.join(owned, 'deployment.log')
    plant(file, secret)
    const stderr: string[] = []
    vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => (stderr.push(String(chunk)), true))
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true)
    configureLog({ file })
    log.info('a line root writes')
    expect(stderr.join('')).toContain(`cannot write log file ${file}: Refusing to write ${file}: it is a symbolic link to ${secret}`)
    untouched()
    expect(fs.lstatSync(file).isSymbolicLink()).toBe(true)
  })

  it('a state file replaced atomically: the link is refused by name; predictable temp names are never opened', () => {
    const file = path.join(owned, 'artifacts.json')
    plant(file, secret)
    expect(() => writeState(file, { current: null, previous: null })).toThrow(`Refusing to write ${file}: it is a symbolic link to ${secret}`)
    untouched()
    // The temp name of the code before: pid-based, guessable. Planted, it is simply not used.
    fs.rmSync(file)
    plant(path.join(owned, `.artifacts.json.${process.pid}.tmp`), secret)
    writeFileAtomic(file, '{"current":null,"previous":null}\n', 0o644)
    untouched()
    expect(fs.readFileSync(file, 'utf8')).toBe('{"current":null,"previous":null}\n')
    expect(fs.readdirSync(owned).filter((f) => f.endsWith('.tmp'))).toEqual([`.artifacts.json.${process.pid}.tmp`])
  })

  it('a file replaced atomically keeps its owner and mode; a new one for the deploy user has them before its name', async () => {
    const env = path.join(owned, '.env.production')
    fs.writeFileSync(env, 'A=1\n', { mode: 0o600 })
    fs.chownSync(env, DEPLOY, DEPLOY)
    writeFileAtomic(env, 'A=2\n')
    const kept = fs.statSync(env)
    expect([kept.uid, kept.gid, kept.mode & 0o7777]).toEqual([DEPLOY, DEPLOY, 0o600])
    const key = path.join(owned, 'deploy_key')
    await installFileAs(secret, key, 0o600, String(DEPLOY))
    const installed = fs.statSync(key)
    expect([installed.uid, installed.gid, installed.mode & 0o7777]).toEqual([DEPLOY, DEPLOY, 0o600])
    fs.rmSync(key)
    plant(key, secretDir + '/key')
    await expect(installFileAs(secret, key, 0o600, String(DEPLOY))).rejects.toThrow(`Refusing to write ${key}: it is a symbolic link`)
    untouched()
  })

  it('the audit log: an event is not appended through a link', () => {
    const file = path.join(owned, 'deployments.jsonl')
    plant(file, secret)
    expect(() => appendEvent(file, newEvent('deploy', 'v1.0.0', null, 'manual'))).toThrow(`Refusing to write ${file}: it is a symbolic link to ${secret}`)
    untouched()
  })

  it('the metrics file and its old temp name: replaced beside the link, never written through it', () => {
    const metricsDir = path.join(owned, 'metrics')
    fs.mkdirSync(metricsDir)
    fs.chownSync(metricsDir, DEPLOY, DEPLOY)
    plant(path.join(metricsDir, 'toogoodtogo_backup.prom'), secret)
    plant(path.join(metricsDir, `.toogoodtogo_backup.prom.${process.pid}.tmp`), secret)
    expect(publishMetrics({ METRICS_DIR: metricsDir }, 'backup', [{ name: 'toogoodtogo_backup_last_success_timestamp_seconds', value: 1 }])).toBe(true)
    untouched()
    expect(fs.lstatSync(path.join(metricsDir, 'toogoodtogo_backup.prom')).isFile()).toBe(true)
  })

  it('chown and chmod (handOver): a link is refused, and so is a second name of a root file', async () => {
    const file = path.join(owned, '.setup-complete')
    plant(file, secret)
    await expect(handOver(String(DEPLOY), file, 0o644)).rejects.toThrow(`Refusing to write ${file}: it is a symbolic link to ${secret}`)
    fs.rmSync(file)
    fs.linkSync(secret, file)
    await expect(handOver(String(DEPLOY), file, 0o644)).rejects.toThrow(`Refusing to write ${file}: it has more than one name (a hard link)`)
    fs.rmSync(file)
    untouched()
  })

  it('directories (install -d): a planted link at the directory or on the way to it is refused; root\'s own link is followed', async () => {
    const logDir = path.join(owned, 'log')
    plant(logDir, secretDir)
    await expect(ensureDir(logDir, 0o750, String(DEPLOY))).rejects.toThrow(`Refusing to write ${logDir}: it is a symbolic link to ${secretDir}`)
    expect(() => makeDirNoFollow(path.join(logDir, 'pgbackrest'), 0o700, { uid: 999, gid: 999 })).toThrow(`Refusing to write ${logDir}: a directory on the way is a symbolic link that is not root's`)
    untouched()
    // A data volume mounted elsewhere: root's link in root's directory.
    const volume = path.join(dir, 'volume')
    fs.mkdirSync(volume)
    const backups = path.join(dir, 'backups')
    fs.symlinkSync(volume, backups)
    await ensureDir(backups, 0o700, String(DEPLOY))
    const made = fs.statSync(volume)
    expect([made.uid, made.mode & 0o7777]).toEqual([DEPLOY, 0o700])
    // And a new one, with its missing parents.
    await ensureDir(path.join(owned, 'a', 'b'), 0o750, String(DEPLOY))
    const b = fs.statSync(path.join(owned, 'a', 'b'))
    expect([b.uid, b.mode & 0o7777]).toEqual([DEPLOY, 0o750])
  })
})
