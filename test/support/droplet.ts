import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { ROOT, type ScriptResult } from './scripts.ts'
import { bedEnv, exec as run } from './stack.ts'

// A "fresh droplet" for setup-droplet's e2e test: a systemd-booted Debian 12 container (image from
// test/e2e/droplet/build-image.sh, run without --privileged, which these machines refuse: CAP_SYS_RESOURCE is not in the host's
// capability bounding set) that talks to
// the bed's Docker engine through the host's socket, with the host's docker CLI, compose plugin
// and Node mounted read-only. With the host's socket, compose bind mounts resolve on the host, so
// the deploy directory (holding a copy of this toolkit) is mounted at the same path on both sides.
// Container and compose project share one name starting with "ttg", which teardown.sh cleans.
export const DROPLETS_ROOT = '/var/lib/ttg-e2e-droplets'
const SOCKET = '/var/run/docker.sock'
const PLUGIN_DIRS = ['/usr/local/lib/docker/cli-plugins', '/usr/libexec/docker/cli-plugins', '/usr/lib/docker/cli-plugins', path.join(process.env.HOME ?? '/root', '.docker/cli-plugins')]

export interface Droplet {
  /** container name, and the compose project name of the stack setup starts */
  name: string
  /** host directory mounted at the same path inside */
  root: string
  deployDir: string
  toolkitDir: string
  /** the environment setup-droplet runs with */
  env: Record<string, string>
  exec(argv: string[], options?: { env?: Record<string, string>; user?: string }): Promise<ScriptResult>
  sh(script: string): Promise<ScriptResult>
  setup(args: string[], extraEnv?: Record<string, string>): Promise<ScriptResult>
  /** the argv that runs setup-droplet.sh inside with a terminal (`docker exec -it`) */
  setupArgvWithTty(args: string[], extraEnv?: Record<string, string>): string[]
  readFile(file: string): Promise<string>
  reboot(): Promise<void>
  destroy(): Promise<void>
}

export function ensureDropletImage(): string {
  const built = spawnSync('bash', [path.join(ROOT, 'test/e2e/droplet/build-image.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  if (built.status !== 0) throw new Error('test/e2e/droplet/build-image.sh failed (see its [bed] lines above)')
  return built.stdout.trim().split('\n').pop()!
}

export async function createDroplet(image: string, label: string): Promise<Droplet> {
  const bed = bedEnv()
  const name = `ttgdrop${label}${Date.now().toString(36)}`
  const root = path.join(DROPLETS_ROOT, name)
  const deployDir = path.join(root, 'toogoodtogo')
  const toolkitDir = path.join(deployDir, 'deployment')
  fs.mkdirSync(toolkitDir, { recursive: true })
  // The toolkit as an operator clones it, node_modules included (the droplet has no registry).
  must(spawnSync('bash', ['-c', 'tar --exclude=./.git --exclude=./test/e2e/bed/.bed.env -C "$1" -cf - . | tar -C "$2" -xf -', 'copy', ROOT, toolkitDir]), 'copying the toolkit')

  const dockerCli = must(spawnSync('sh', ['-c', 'command -v docker'], { encoding: 'utf8' }), 'finding the docker CLI').trim()
  const pluginDir = PLUGIN_DIRS.find((d) => fs.existsSync(path.join(d, 'docker-compose')))
  if (!pluginDir) throw new Error(`no Compose v2 plugin in ${PLUGIN_DIRS.join(', ')}: run test/e2e/bed/provision.sh`)
  const mounts = [
    `${SOCKET}:${SOCKET}`,
    `${fs.realpathSync(dockerCli)}:/usr/local/bin/docker:ro`,
    // System-wide inside, so the deploy user's docker finds it too.
    `${pluginDir}:/usr/local/lib/docker/cli-plugins:ro`,
    `${process.execPath}:/usr/bin/node:ro`,
    `${bed.APP_REPO}:${bed.APP_REPO}:ro`,
    `${root}:${root}`,
  ]
  must(spawnSync('docker', [
    'run', '--detach', '--name', name, '--hostname', 'ttg-droplet',
    // systemd's orderly shutdown; Docker's default SIGTERM would make it re-execute itself.
    '--stop-signal', 'SIGRTMIN+3',
    '--cap-add', 'SYS_ADMIN', '--cap-add', 'NET_ADMIN',
    '--security-opt', 'seccomp=unconfined', '--security-opt', 'apparmor=unconfined',
    '-v', '/sys/fs/cgroup:/sys/fs/cgroup:ro', '--tmpfs', '/run', '--tmpfs', '/run/lock', '-e', 'container=docker',
    ...mounts.flatMap((m) => ['-v', m]),
    image, '/sbin/init',
  ], { encoding: 'utf8' }), 'starting the droplet container')

  const env: Record<string, string> = {
    DEPLOY_DIR: deployDir,
    COMPOSE_PROJECT_NAME: name,
    APP_REPO_URL: `file://${bed.APP_REPO}`,
    NO_COLOR: '1',
  }
  const exec = (argv: string[], options: { env?: Record<string, string>; user?: string } = {}) =>
    run(['docker', 'exec', '-i', ...Object.entries(options.env ?? {}).flatMap(([k, v]) => ['-e', `${k}=${v}`]), name, ...(options.user ? ['runuser', '-u', options.user, '--'] : []), ...argv])
  const setupScript = path.join(toolkitDir, 'scripts/setup-droplet.sh')
  const registry = await registryBridge(name, bed.REGISTRY ?? '127.0.0.1:5000')
  const droplet: Droplet = {
    name, root, deployDir, toolkitDir, env,
    exec,
    sh: (script) => exec(['bash', '-c', script]),
    setup: (args, extraEnv = {}) => exec([setupScript, ...args], { env: { ...env, ...extraEnv } }),
    setupArgvWithTty: (args, extraEnv = {}) => ['docker', 'exec', '-it', ...Object.entries({ ...env, ...extraEnv }).flatMap(([k, v]) => ['-e', `${k}=${v}`]), name, setupScript, ...args],
    async readFile(file) {
      const r = await exec(['cat', file])
      if (r.code !== 0) throw new Error(`cat ${file} in ${name}: ${r.stderr}`)
      return r.stdout
    },
    async reboot() {
      // Time for ExecStop (compose stop, each service's grace period) before Docker would kill it.
      must(spawnSync('docker', ['restart', '--time', '150', name], { encoding: 'utf8' }), 'restarting the droplet')
      await waitForBoot(droplet)
      await registry.start(droplet)
    },
    async destroy() {
      registry.close()
      spawnSync('docker', ['rm', '--force', '--volumes', name])
      for (const kind of ['container', 'volume', 'network'] as const) {
        const ids = spawnSync('docker', [kind, 'ls', kind === 'container' ? '-aq' : '-q', '--filter', `label=com.docker.compose.project=${name}`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean)
        if (ids.length) spawnSync('docker', [kind, 'rm', ...(kind === 'container' ? ['--force', '--volumes'] : []), ...ids])
      }
      fs.rmSync(root, { recursive: true, force: true })
    },
  }
  try {
    await waitForBoot(droplet)
    const node = await exec(['node', '--version'])
    if (node.code !== 0) throw new Error(`the host's node (${process.execPath}) does not run inside the droplet container: ${node.stderr}`)
    // A droplet created with the operator's SSH key, as DigitalOcean's form asks for one: setup
    // hardens sshd to keys only and refuses to while root has none (it would lock the operator out).
    const key = await droplet.sh("install -d -m 700 /root/.ssh && ssh-keygen -q -t ed25519 -N '' -C e2e-operator -f /root/.ssh/operator_key && cat /root/.ssh/operator_key.pub >> /root/.ssh/authorized_keys")
    if (key.code !== 0) throw new Error(`giving root an authorized key in ${name}: ${key.stderr}`)
    await registry.start(droplet)
  } catch (error) {
    // The caller never gets the droplet to destroy: nothing of it may outlive this failure.
    await droplet.destroy()
    throw error
  }
  return droplet
}

/**
 * The bed's registry answers on the host's loopback (127.0.0.1:5000); the droplet has a loopback
 * of its own. Pulls go through the host's engine and work anyway, but deploy's pre-flight asks the
 * registry itself (`docker manifest inspect`, a client-side call), as it would ask ghcr.io from a
 * droplet. So the registry is made to answer at the same address inside: this test process relays
 * from the droplet's gateway address to the host's loopback, and a transient unit in the droplet
 * (node, mounted from the host) relays from its loopback to there. Restarted after each reboot.
 */
async function registryBridge(name: string, registry: string): Promise<LoopbackBridge> {
  const [registryHost, registryPort] = [registry.slice(0, registry.lastIndexOf(':')), Number(registry.slice(registry.lastIndexOf(':') + 1))]
  return loopbackBridge(name, registryHost, registryPort, 'ttg-e2e-registry')
}

export interface LoopbackBridge {
  /** starts the relay inside (again after a reboot) and waits until it answers */
  start(d: Droplet): Promise<void>
  close(): void
}

/** `host:port` on the test host's loopback, answering at the same address inside the droplet `name`. */
export async function loopbackBridge(name: string, host: string, port: number, unit: string): Promise<LoopbackBridge> {
  const gateway = must(spawnSync('docker', ['inspect', '--format', '{{.NetworkSettings.Gateway}}', name], { encoding: 'utf8' }), 'reading the droplet\'s gateway').trim()
  const relay = net.createServer((client) => {
    const upstream = net.connect(port, host)
    client.pipe(upstream).pipe(client)
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
  })
  await new Promise<void>((resolve, reject) => {
    relay.once('error', reject)
    relay.listen(0, gateway, () => resolve())
  })
  const relayPort = (relay.address() as net.AddressInfo).port
  const inside = `const net=require('net');net.createServer((c)=>{const u=net.connect(${relayPort},'${gateway}');c.pipe(u).pipe(c);c.on('error',()=>u.destroy());u.on('error',()=>c.destroy())}).listen(${port},'${host}')`
  return {
    async start(d) {
      const r = await d.exec(['systemd-run', '--quiet', `--unit=${unit}`, '/usr/bin/node', '-e', inside])
      if (r.code !== 0) throw new Error(`starting the relay ${unit} in ${d.name} failed: ${r.stderr}`)
      const check = await d.sh(`for i in $(seq 1 50); do (exec 3<>/dev/tcp/${host}/${port}) 2>/dev/null && exit 0; sleep 0.1; done; exit 1`)
      if (check.code !== 0) throw new Error(`the relay ${unit} in ${d.name} does not answer on ${host}:${port}`)
    },
    close: () => relay.close(),
  }
}

async function waitForBoot(d: Droplet): Promise<void> {
  const deadline = Date.now() + 120_000
  let last = ''
  while (Date.now() < deadline) {
    const r = await d.exec(['systemctl', 'is-system-running', '--wait'])
    last = r.stdout.trim()
    if (last === 'running') return
    if (last === 'degraded') {
      const failed = await d.exec(['systemctl', '--failed', '--no-legend', '--plain'])
      throw new Error(`the droplet booted degraded: ${failed.stdout.trim()}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  throw new Error(`the droplet did not finish booting within 120s (systemctl is-system-running: ${last})`)
}

function must(result: ReturnType<typeof spawnSync>, what: string): string {
  if (result.status !== 0) throw new Error(`${what} failed: ${String(result.stderr ?? '')}${String(result.error ?? '')}`)
  return String(result.stdout ?? '')
}

/**
 * Everything a run could change, as text to compare: content hashes, modes and owners of the
 * deploy directory (the toolkit copy aside), the units, logrotate, firewall and account files;
 * the units' states. The log file is left out: every run appends to it.
 */
export async function hostSnapshot(d: Droplet): Promise<string> {
  const units = 'toogoodtogo.service toogoodtogo-healthcheck.service toogoodtogo-backup.timer toogoodtogo-restore-drill.timer'
  const r = await d.sh([
    'set -euo pipefail',
    `cd /; find "${d.deployDir}" /etc/systemd/system /etc/logrotate.d /etc/ufw /etc/ssh/sshd_config.d /opt/backups /etc/gitconfig /etc/passwd /etc/group -xdev \\( -path "${d.toolkitDir}" -prune \\) -o -printf '%m %u:%g %p\\n' | sort`,
    `find "${d.deployDir}" /etc/systemd/system /etc/logrotate.d /etc/ufw /etc/ssh/sshd_config.d /etc/gitconfig /etc/passwd /etc/group -xdev \\( -path "${d.toolkitDir}" -prune \\) -o -type f -print0 | sort -z | xargs -0 sha256sum`,
    `systemctl show --property=Id,ActiveState,SubState,UnitFileState,ActiveEnterTimestamp ${units}`,
    'ufw status verbose',
  ].join('\n'))
  if (r.code !== 0) throw new Error(`snapshot of ${d.name} failed: ${r.stderr}`)
  return r.stdout
}

/** Id and start time of each container of the droplet's stack, from the host's engine. */
export function stackContainers(d: Droplet): string {
  const ids = spawnSync('docker', ['ps', '-aq', '--filter', `label=com.docker.compose.project=${d.name}`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean)
  if (ids.length === 0) return ''
  return spawnSync('docker', ['inspect', '--format', '{{.Name}} {{.Id}} {{.State.StartedAt}} {{.State.Status}}', ...ids], { encoding: 'utf8' }).stdout.split('\n').sort().join('\n')
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })
}

// ---- a terminal ------------------------------------------------------------------------------

export interface PtyStep {
  /** waits until the terminal shows this (after what earlier steps matched) */
  expect: RegExp
  /** then types this; '\r' is Enter. A function first does what a person would (given the screen so far) */
  send: string | ((screen: string) => Promise<string>)
}

export interface PtyResult {
  code: number
  /** everything the terminal showed, prompts and echo included */
  transcript: string
}

/**
 * Runs argv on a pseudo-terminal (util-linux `script`), answering prompts as a person would: each
 * answer is typed only once its prompt is on the screen.
 */
export function runOnPty(argv: string[], steps: PtyStep[], timeoutMs: number): Promise<PtyResult> {
  const quoted = argv.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')
  const child = spawn('script', ['--quiet', '--flush', '--return', '--command', quoted, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TERM: 'xterm' } })
  let transcript = ''
  let from = 0
  let next = 0
  let busy = false
  let failed: Error | null = null
  const answer = async () => {
    if (busy) return
    busy = true
    try {
      while (next < steps.length) {
        const step = steps[next]!
        const match = step.expect.exec(transcript.slice(from))
        if (!match) return
        from += match.index + match[0].length
        next++
        child.stdin.write(typeof step.send === 'string' ? step.send : await step.send(transcript))
      }
    } catch (error) {
      failed = error as Error
      child.kill('SIGKILL')
    } finally {
      busy = false
    }
  }
  child.stdout.on('data', (d: Buffer) => {
    transcript += d.toString('utf8')
    void answer()
  })
  child.stderr.on('data', (d: Buffer) => (transcript += d.toString('utf8')))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`no exit within ${timeoutMs / 1000}s; waiting for ${steps[next]?.expect ?? 'the end'}; screen so far:\n${transcript}`))
    }, timeoutMs)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      if (failed) reject(failed)
      else if (next < steps.length) reject(new Error(`exited ${code} before showing ${steps[next]!.expect}; screen:\n${transcript}`))
      else resolve({ code: code ?? 1, transcript })
    })
  })
}

// ---- the application's git host ----------------------------------------------------------------

export interface GitHost {
  /** the ssh URL setup-droplet is given, as on a droplet: git@<host>:<path> */
  url: string
  /** what adding a deploy key in the repository's settings does: the key may now read it */
  authorize(publicKey: string): Promise<void>
}

/**
 * The bed's application repository served over SSH by the droplet's own sshd (a `git` user with
 * git-shell and a bare clone), so setup-droplet's deploy key, host-key acceptance and the deploy
 * user's fetches run as they would against GitHub. The key is refused until authorize() adds it.
 */
export async function gitHostOverSsh(d: Droplet, appRepo: string): Promise<GitHost> {
  const r = await d.sh([
    'set -euo pipefail',
    'useradd --create-home --shell /usr/bin/git-shell git',
    // No password, but not locked: sshd refuses a locked account even for a key.
    "usermod -p '*' git",
    `git clone --quiet --bare "${appRepo}" /srv/git/bot.git`,
    'install -d -m 0700 -o git -g git /home/git/.ssh',
    'install -m 0600 -o git -g git /dev/null /home/git/.ssh/authorized_keys',
    'chown -R git:git /srv/git',
    'systemctl is-active ssh.service',
  ].join('\n'))
  if (r.code !== 0) throw new Error(`setting up the git host in ${d.name} failed: ${r.stdout}${r.stderr}`)
  return {
    url: 'git@localhost:/srv/git/bot.git',
    async authorize(publicKey) {
      // Checked whole, so it can go into the shell line as it is.
      if (!/^ssh-ed25519 [A-Za-z0-9+/=]+( [\w@.-]+)*$/.test(publicKey.trim())) throw new Error(`not an ed25519 public key: ${publicKey}`)
      const added = await d.sh(`printf '%s\\n' '${publicKey.trim()}' >> /home/git/.ssh/authorized_keys`)
      if (added.code !== 0) throw new Error(`authorizing the key failed: ${added.stderr}`)
    },
  }
}

/** The stack's containers, networks and volumes gone, as `docker compose down --volumes` leaves them. */
export function removeStack(d: Droplet): void {
  for (const kind of ['container', 'volume', 'network'] as const) {
    const ids = spawnSync('docker', [kind, 'ls', ...(kind === 'container' ? ['-aq'] : ['-q']), '--filter', `label=com.docker.compose.project=${d.name}`], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean)
    if (ids.length) must(spawnSync('docker', [kind, 'rm', ...(kind === 'container' ? ['--force', '--volumes'] : []), ...ids], { encoding: 'utf8' }), `removing the stack's ${kind}s`)
  }
}
