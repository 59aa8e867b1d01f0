import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { startHookServer, type HookServer } from '../support/hook.ts'
import { exec, ROOT, tempDir } from '../support/scripts.ts'

// The OnFailure= notifier (deployment/systemd/toogoodtogo-notify-failure) with the real sh, sed,
// awk and curl against a local receiver. systemctl and journalctl are stand-ins printing what
// systemd would about the failed unit; the real thing runs in the droplet e2e.
const SCRIPT = path.join(ROOT, 'deployment/systemd/toogoodtogo-notify-failure')
const INVOCATION = '0123456789abcdef0123456789abcdef'
let hook: HookServer
let work: string
let bin: string
let envFile: string

beforeAll(async () => {
  hook = await startHookServer()
})
afterAll(() => hook?.close())

beforeEach(() => {
  work = tempDir('ttg-notifier-')
  bin = path.join(work, 'bin')
  fs.mkdirSync(bin)
  fs.mkdirSync(path.join(work, 'run'))
  fs.writeFileSync(path.join(bin, 'systemctl'), `#!/bin/sh\ncase "$*" in *InvocationID*) echo ${INVOCATION} ;; *ExecMainStatus*) echo 1 ;; *Result*) echo exit-code ;; esac\n`, { mode: 0o755 })
  // A line with everything JSON must escape: quotes, a backslash, a tab.
  fs.writeFileSync(path.join(bin, 'journalctl'), `#!/bin/sh\nprintf '%s\\n' 'file:///opt/toogoodtogo/deployment/scripts/backup.ts:3' 'SyntaxError: Unexpected token "}" in C:\\\\x\tend' a b c d e f g 'Node.js v20'\n`, { mode: 0o755 })
  envFile = path.join(work, '.env.production')
  hook.received.length = 0
})

function notifier(env: Record<string, string> = {}) {
  return exec(['sh', SCRIPT, 'toogoodtogo-backup.service'], { PATH: `${bin}:/usr/bin:/bin`, ENV_FILE: envFile, TOLD_DIR: path.join(work, 'run'), ...env }, { inherit: false })
}

describe('the unit failure notifier', () => {
  it('tells "<unit> failed on <host>" with the last journal lines, to the webhook and Telegram, reading the env file without running it', async () => {
    const base = hook.url.replace(/\/hook$/, '')
    fs.writeFileSync(envFile, [
      '# comment',
      `export NOTIFY_WEBHOOK_URL='${hook.url}'   `,
      'TELEGRAM_NOTIFY_CHAT_ID=-1004242 # the ops chat',
      'TELEGRAM_BOT_TOKEN="123456:ABC-def_g"',
      `TELEGRAM_API_BASE=${base}/tg`,
      `BOT_IMAGE=$(touch ${work}/pwned)`,
    ].join('\n') + '\n')
    const result = await notifier()
    expect(result.code, result.stderr).toBe(0)
    expect(fs.existsSync(path.join(work, 'pwned'))).toBe(false)
    expect(hook.received).toHaveLength(2)
    const [webhook, telegram] = hook.received.map((b) => JSON.parse(b) as { text: string; chat_id?: string })
    const host = (await exec(['hostname'])).stdout.trim()
    expect(webhook?.text).toBe(`toogoodtogo-backup.service failed on ${host} (exit-code, exit status 1). Last lines:\nSyntaxError: Unexpected token "}" in C:\\\\x end\na\n...\na\nb\nc\nd\ne\nf\ng\nNode.js v20\nLook further: journalctl -u toogoodtogo-backup.service`)
    expect(telegram).toMatchObject({ chat_id: '-1004242', text: webhook?.text })
  })

  it('is quiet when the toolkit told the failure itself, and removes the marker', async () => {
    fs.writeFileSync(envFile, `NOTIFY_WEBHOOK_URL=${hook.url}\n`)
    fs.writeFileSync(path.join(work, 'run', `told-${INVOCATION}`), '')
    const result = await notifier()
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('the toolkit has told it already')
    expect(hook.received).toEqual([])
    expect(fs.readdirSync(path.join(work, 'run'))).toEqual([])
  })

  it('a unit systemd is about to restart is told only once it stays failed', async () => {
    fs.writeFileSync(envFile, `NOTIFY_WEBHOOK_URL=${hook.url}\n`)
    fs.writeFileSync(path.join(bin, 'systemctl'), '#!/bin/sh\ncase "$*" in *SubState*) echo auto-restart ;; esac\n', { mode: 0o755 })
    const result = await notifier()
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('systemd restarts it')
    expect(hook.received).toEqual([])
  })

  it('with no channel set it says so and tells nobody; a receiver that fails makes the notifier fail', async () => {
    fs.writeFileSync(envFile, 'NOTIFY_WEBHOOK_URL=\n')
    const none = await notifier()
    expect(none.code).toBe(0)
    expect(none.stderr).toContain('no notification channel is set')
    fs.writeFileSync(envFile, 'NOTIFY_WEBHOOK_URL=http://127.0.0.1:1/hook\n')
    const dead = await notifier()
    expect(dead.code).toBe(1)
    expect(dead.stderr).toContain('webhook notification failed')
  })
})
