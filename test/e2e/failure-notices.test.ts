import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startHookServer, type HookServer } from '../support/hook.ts'
import { createDroplet, ensureDropletImage, gitHostOverSsh, type Droplet } from '../support/droplet.ts'
import { bridgeGateway } from '../support/pitr-stack.ts'
import { stopAfterFirstFailure } from '../support/sequence.ts'
import { bedEnv } from '../support/stack.ts'

// Issue 22, item 1 on a fresh droplet (a systemd-booted Debian 12 container, test/support/droplet.ts):
// the units setup-droplet installs tell their failures once, through NOTIFY_WEBHOOK_URL in
// .env.production, to a receiver on this host (the droplet reaches it at Docker's bridge address):
// the backup timer's service with PostgreSQL stopped and the drill unit with a damaged backup
// (told by the toolkit; the OnFailure= notifier stays quiet), and a hotfix that does not parse
// (the toolkit cannot start: the notifier tells it, with the journal's last lines).
const bed = bedEnv()
const BACKUP_DIR = '/opt/backups/postgres'
const IMAGES = { BOT_IMAGE: bed.BOT_IMAGE!, APP_VERSION: 'v1.0.0', POSTGRES_IMAGE: bed.POSTGRES_IMAGE!, REDIS_IMAGE: bed.REDIS_IMAGE!, NGINX_IMAGE: bed.NGINX_IMAGE! }

describe('a failed unit on a droplet is told once', () => {
  let d: Droplet
  let hook: HookServer
  const texts = () => hook.received.map((b) => (JSON.parse(b) as { text: string }).text)

  beforeAll(async () => {
    const image = ensureDropletImage()
    hook = await startHookServer(await bridgeGateway())
    d = await createDroplet(image, 'n')
    const repo = await gitHostOverSsh(d, bed.APP_REPO!)
    d.env.APP_REPO_URL = repo.url
    const key = await d.sh("ssh-keygen -q -t ed25519 -N '' -C 'operator key' -f /root/bot_deploy_key && cat /root/bot_deploy_key.pub")
    expect(key.code, key.stderr).toBe(0)
    await repo.authorize(key.stdout)
    const answers = { TELEGRAM_BOT_TOKEN: '123456:E2E-notify_token', STRIPE_API_KEY: 'sk_test_notify_key', ...IMAGES, DEPLOY_KEY_FILE: '/root/bot_deploy_key' }
    const file = `${d.root}/answers.env`
    const w = await d.sh(`umask 077; cat > ${file} <<'EOF'\n${Object.entries(answers).map(([k, v]) => `${k}=${v}`).join('\n')}\nEOF`)
    expect(w.code).toBe(0)
    const setup = await d.setup(['--env-file', file, '--yes'])
    expect(setup.code, setup.stdout + setup.stderr).toBe(0)
    // The operator adds the channel to .env.production, as the README says.
    expect((await d.sh(`printf 'NOTIFY_WEBHOOK_URL=%s\\n' '${hook.url}' >> ${d.deployDir}/.env.production`)).code).toBe(0)
  })
  afterAll(async () => {
    await d?.destroy()
    hook?.close()
  })
  stopAfterFirstFailure()

  /** Starts a oneshot unit (it fails), then waits for what reaches the receiver, and a while longer for a second telling. */
  async function failUnit(unit: string): Promise<string[]> {
    hook.received.length = 0
    const r = await d.exec(['systemctl', 'start', unit])
    expect(r.code, `${unit} should fail`).not.toBe(0)
    const deadline = Date.now() + 60_000
    while (hook.received.length === 0 && Date.now() < deadline) await sleep(250)
    // The OnFailure= notifier has run by the time it is inactive again.
    await d.sh(`for i in $(seq 1 120); do state=$(systemctl show -p ActiveState --value 'toogoodtogo-failure@${unit}.service'); [ "$state" = activating ] || exit 0; sleep 0.5; done`)
    await sleep(2_000)
    return texts()
  }

  function postgresContainer(): Promise<string> {
    return d.sh(`docker ps -aq --filter label=com.docker.compose.project=${d.name} --filter label=com.docker.compose.service=postgres`).then((r) => r.stdout.trim())
  }

  it('1. the backup timer\'s service with PostgreSQL stopped: the toolkit tells it, the unit notifier stays quiet', async () => {
    const postgres = await postgresContainer()
    expect(postgres).not.toBe('')
    expect((await d.exec(['docker', 'stop', postgres])).code).toBe(0)
    try {
      const told = await failUnit('toogoodtogo-backup.service')
      expect(told, JSON.stringify(told)).toHaveLength(1)
      expect(told[0]).toMatch(/^backup scheduled failed on ttg-droplet \(exit 1\): .+ No new backup was made; the earlier backups are untouched \(backup\.sh --list\)\. Look further: journalctl -u toogoodtogo-backup\.service$/)
      const notifier = await d.exec(['journalctl', '--no-pager', '-o', 'cat', '-u', 'toogoodtogo-failure@toogoodtogo-backup.service.service'])
      expect(notifier.stdout).toContain('toogoodtogo-backup.service failed; the toolkit has told it already')
    } finally {
      await d.exec(['docker', 'start', postgres])
    }
    await d.sh(`for i in $(seq 1 120); do [ "$(docker inspect -f '{{.State.Health.Status}}' ${postgres})" = healthy ] && exit 0; sleep 0.5; done; exit 1`)
  })

  it('2. the drill unit with a damaged backup: told once, the live database untouched, the index records the failed drill', async () => {
    hook.received.length = 0
    const made = await d.exec(['systemctl', 'start', 'toogoodtogo-backup.service'])
    expect(made.code, (await d.exec(['journalctl', '--no-pager', '-n', '30', '-u', 'toogoodtogo-backup.service'])).stdout).toBe(0)
    expect(hook.received).toEqual([])
    const index = JSON.parse(await d.readFile(`${BACKUP_DIR}/backup_index.json`)) as { backups: { backup_id: string; file_path: string }[] }
    const newest = index.backups.at(-1)
    expect(newest).toBeDefined()
    // Half the dump, still valid gzip: it fails the drill's checks, not gunzip.
    const damage = await d.sh(`set -e; f='${newest?.file_path}'; zcat "$f" > /tmp/dump.sql; head -c $(( $(stat -c %s /tmp/dump.sql) / 2 )) /tmp/dump.sql | gzip > "$f"; rm /tmp/dump.sql`)
    expect(damage.code, damage.stderr).toBe(0)
    const told = await failUnit('toogoodtogo-restore-drill.service')
    expect(told, JSON.stringify(told)).toHaveLength(1)
    expect(told[0]).toMatch(/^restore --drill failed on ttg-droplet \(exit 2\): .+ The live database was not touched; the failed drill is recorded as last_drill in backup_index\.json\. Look further: backup\.sh --list$/)
    const after = JSON.parse(await d.readFile(`${BACKUP_DIR}/backup_index.json`)) as { backups: { backup_id: string; last_drill: { outcome: string } | null }[] }
    expect(after.backups.find((b) => b.backup_id === newest?.backup_id)?.last_drill?.outcome).toBe('failed')
    // status.sh, the screen the operator opens next, says the same.
    const status = await d.exec([`${d.toolkitDir}/scripts/status.sh`], { user: 'deploy', env: { DEPLOY_DIR: d.deployDir, NO_COLOR: '1' } })
    expect(status.stdout).toContain(`FAILED on ${newest?.backup_id}`)
    expect(status.stdout).toContain('last restore drill failed')
  })

  it('3. a hotfix that does not parse: the toolkit cannot start, the OnFailure= notifier tells it with the journal', async () => {
    const file = `${d.toolkitDir}/scripts/backup.ts`
    expect((await d.sh(`cp ${file} /root/backup.ts.orig && printf '\\nconst broken = {{{\\n' >> ${file}`)).code).toBe(0)
    try {
      const told = await failUnit('toogoodtogo-backup.service')
      expect(told, JSON.stringify(told)).toHaveLength(1)
      expect(told[0]).toMatch(/^toogoodtogo-backup\.service failed on ttg-droplet \(exit-code, exit status 1\)\. Last lines:\n/)
      expect(told[0]).toMatch(/error/i)
      expect(told[0]).toMatch(/\nLook further: journalctl -u toogoodtogo-backup\.service$/)
    } finally {
      await d.sh(`cp /root/backup.ts.orig ${file}`)
    }
  })
})
