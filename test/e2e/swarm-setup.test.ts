import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureDropletImage } from '../support/droplet.ts'
import { exec, ROOT, type ScriptResult } from '../support/scripts.ts'
import { stopAfterFirstFailure } from '../support/sequence.ts'
import { bedEnv } from '../support/stack.ts'
import { ensureSwarmNodes, type SwarmNode, type SwarmNodes } from '../support/swarm-nodes.ts'

// setup-droplet --swarm on three real Docker engines (test/support/swarm-nodes.ts, plain engines out
// of any Swarm). Each "droplet" is its engine plus a container of the droplet image (ufw, Debian 12)
// in the engine's network namespace: setup-droplet runs there as root, as on a droplet, so ufw's
// rules filter what reaches that dockerd, os.networkInterfaces() sees the node's own addresses, and
// docker talks to the node's engine through its socket. Only the Swarm step runs (`--swarm` runs
// nothing else; the rest of setup needs a systemd droplet, test/e2e/setup-droplet.test.ts).
const PREFIX = 'ttgswsetup'
const LOG_FILE = '/tmp/ttg-deployment.log'
const NODE_SOCKET_DIR = '/run/ttg-node'

interface Droplet {
  node: SwarmNode
  /** runs a command in the droplet (root, the node's network, DOCKER_HOST the node's engine) */
  run(argv: string[], env?: Record<string, string>): Promise<ScriptResult>
  script(name: string, args: string[], env?: Record<string, string>): Promise<ScriptResult>
}

let swarm: SwarmNodes
let droplets: Droplet[]
let peers: string

beforeAll(async () => {
  const image = ensureDropletImage()
  swarm = await ensureSwarmNodes({ prefix: PREFIX, count: 3, join: false })
  droplets = []
  for (const node of swarm.nodes) droplets.push(await dropletBeside(node, image))
  peers = swarm.nodes.map((n) => n.ip).join(',')
})

afterAll(async () => {
  for (const node of swarm?.nodes ?? []) await exec(['docker', 'rm', '--force', `${node.container}-droplet`])
  // Left in a Swarm, the nodes would not be reused as plain engines: the next run starts afresh anyway.
  await swarm?.destroy()
})

async function dropletBeside(node: SwarmNode, image: string): Promise<Droplet> {
  const name = `${node.container}-droplet`
  await exec(['docker', 'rm', '--force', name])
  const socketDir = path.dirname(node.dockerHost.slice('unix://'.length))
  const dockerCli = (await exec(['sh', '-c', 'readlink -f "$(command -v docker)"'])).stdout.trim()
  const started = await exec([
    'docker', 'run', '--detach', '--name', name, '--label', `com.docker.compose.project=${PREFIX}`,
    '--network', `container:${node.container}`, '--cap-add', 'NET_ADMIN',
    '-v', `${socketDir}:${NODE_SOCKET_DIR}`, '-v', `${dockerCli}:/usr/local/bin/docker:ro`, '-v', `${process.execPath}:/usr/bin/node:ro`, '-v', `${ROOT}:${ROOT}:ro`,
    '--entrypoint', 'sleep', image, 'infinity',
  ])
  if (started.code !== 0) throw new Error(`starting ${name}: ${started.stderr}`)
  const base = { DOCKER_HOST: `unix://${NODE_SOCKET_DIR}/docker.sock`, LOG_FILE, NO_COLOR: '1', DEPLOY_DIR: '/opt/toogoodtogo' }
  const run = (argv: string[], env: Record<string, string> = {}) =>
    exec(['docker', 'exec', ...Object.entries({ ...base, ...env }).flatMap(([k, v]) => ['-e', `${k}=${v}`]), name, ...argv])
  return { node, run, script: (script, args, env) => run([path.join(ROOT, 'scripts/run.sh'), script, ...args], env) }
}

const output = (r: ScriptResult): string => r.stdout + r.stderr

async function swarmState(node: SwarmNode): Promise<string> {
  return (await node.docker(['info', '--format', '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}'])).stdout.trim()
}

async function ufwRules(d: Droplet): Promise<string> {
  return (await d.run(['ufw', 'status'])).stdout
}

describe('setup-droplet --swarm on three Docker engines', () => {
  stopAfterFirstFailure()
  let token = ''

  it('--swarm init: the first droplet becomes the manager, advertising its own address; ufw opens the Swarm ports to the peers only', async () => {
    const [d1, d2, d3] = droplets as [Droplet, Droplet, Droplet]
    const r = await d1.script('setup-droplet', ['--swarm', 'init'], { SWARM_PEERS: peers })
    expect(r.code, output(r)).toBe(0)
    expect(output(r)).toContain(`Swarm initialised: this droplet is its manager, at ${d1.node.ip}`)
    expect(await swarmState(d1.node)).toBe('active true')
    const rules = await ufwRules(d1)
    expect(rules).toContain('Status: active')
    for (const peer of [d2.node.ip, d3.node.ip]) {
      for (const port of ['2377/tcp', '7946/tcp', '7946/udp', '4789/udp']) expect(rules).toMatch(new RegExp(`^${port.replace('/', '\\/')}\\s+ALLOW\\s+${peer.replace(/\./g, '\\.')}\\s*$`, 'm'))
    }
    // never from anywhere, and not from itself
    expect(rules).not.toMatch(/^(2377|7946|4789)\S*\s+ALLOW\s+Anywhere/m)
    expect(rules).not.toContain(`ALLOW       ${d1.node.ip}`)
    // ufw filters what reaches this dockerd: a peer gets to 2377, a machine on the same network that is no peer does not.
    const connect = `timeout 5 bash -c '</dev/tcp/${d1.node.ip}/2377' && echo open || echo closed`
    expect((await exec(['docker', 'exec', d2.node.container, 'bash', '-c', connect])).stdout.trim()).toBe('open')
    const stranger = await exec(['docker', 'run', '--rm', '--label', `com.docker.compose.project=${PREFIX}`, '--network', swarm.network, bedEnv().BASE_IMAGE ?? 'ttg-base:bookworm', 'bash', '-c', connect])
    expect(stranger.stdout.trim(), stranger.stderr).toBe('closed')
    token = (await d1.node.docker(['swarm', 'join-token', '-q', 'worker'])).stdout.trim()
    expect(token).toMatch(/^SWMTKN-1-/)
  })

  it('--swarm join --dry-run prints the plan, the token masked, and changes nothing', async () => {
    const d2 = droplets[1] as Droplet
    const r = await d2.script('setup-droplet', ['--swarm', 'join', swarm.manager.ip, '--dry-run'], { SWARM_PEERS: peers, SWARM_JOIN_TOKEN: token })
    expect(r.code, output(r)).toBe(0)
    expect(r.stdout).toContain('[dry-run] ufw allow from')
    expect(r.stdout).toMatch(/\[dry-run\] POST \/swarm\/join .*"JoinToken":"\*\*\*"/)
    expect(output(r)).not.toContain(token)
    expect(await swarmState(d2.node)).toBe('inactive false')
    expect(await ufwRules(d2)).toContain('Status: inactive')
  })

  it('--swarm join: the second droplet joins as a worker; the token is in no output and no log line (it reaches dockerd in an API body, on no command line)', async () => {
    const d2 = droplets[1] as Droplet
    const r = await d2.script('setup-droplet', ['--swarm', 'join', swarm.manager.ip], { SWARM_PEERS: peers, SWARM_JOIN_TOKEN: token })
    expect(r.code, output(r)).toBe(0)
    expect(output(r)).toContain(`Joined the Swarm managed by ${swarm.manager.ip} as a worker, advertising ${d2.node.ip}`)
    expect(output(r)).not.toContain(token)
    expect((await d2.run(['cat', LOG_FILE])).stdout).not.toContain(token)
    expect(await swarmState(d2.node)).toBe('active false')
    expect(await ufwRules(d2)).toMatch(new RegExp(`^2377/tcp\\s+ALLOW\\s+${swarm.manager.ip.replace(/\./g, '\\.')}\\s*$`, 'm'))
  })

  it('a droplet already in another Swarm is refused, and left in it', async () => {
    const d3 = droplets[2] as Droplet
    const own = await d3.node.docker(['swarm', 'init', '--advertise-addr', d3.node.ip])
    expect(own.code, own.stderr).toBe(0)
    const r = await d3.script('setup-droplet', ['--swarm', 'join', swarm.manager.ip], { SWARM_PEERS: peers, SWARM_JOIN_TOKEN: token })
    expect(r.code).toBe(1)
    expect(output(r)).toContain(`This node is already in another Swarm (managers: ${d3.node.ip}:2377), not the one managed by ${swarm.manager.ip}`)
    expect(output(r)).toContain('Nothing was changed')
    expect(await swarmState(d3.node)).toBe('active true')
    expect(await ufwRules(d3)).toContain('Status: inactive')
    // Once it has left, it joins like any other.
    expect((await d3.node.docker(['swarm', 'leave', '--force'])).code).toBe(0)
    const joined = await d3.script('setup-droplet', ['--swarm', 'join', swarm.manager.ip], { SWARM_PEERS: peers, SWARM_JOIN_TOKEN: token })
    expect(joined.code, output(joined)).toBe(0)
  })

  it('a second run on each droplet changes nothing and says so', async () => {
    const [d1, d2] = droplets as [Droplet, Droplet]
    const rulesBefore = [await ufwRules(d1), await ufwRules(d2)]
    const init = await d1.script('setup-droplet', ['--swarm', 'init'], { SWARM_PEERS: peers })
    expect(init.code, output(init)).toBe(0)
    expect(output(init)).toMatch(/Already a manager of Swarm \S+ \(advertising [\d.]+\): left as it is/)
    expect(output(init)).toContain('(already so)')
    const join = await d2.script('setup-droplet', ['--swarm', 'join', swarm.manager.ip], { SWARM_PEERS: peers })
    expect(join.code, output(join)).toBe(0)
    expect(output(join)).toContain(`Already in the Swarm managed by ${swarm.manager.ip} (as a worker, advertising ${d2.node.ip}): left as it is`)
    expect([await ufwRules(d1), await ufwRules(d2)]).toEqual(rulesBefore)
  })

  it('status on the manager lists the three nodes, the services and a task that cannot run, with its error', async () => {
    const d1 = droplets[0] as Droplet
    // An image no node has and no registry serves: its task is rejected, with Docker's reason.
    const service = await d1.node.docker(['service', 'create', '--detach', '--name', 'ttg-missing', '--replicas', '1', '127.0.0.1:5999/ttg-missing:v0'])
    expect(service.code, service.stderr).toBe(0)
    let r: ScriptResult = { code: 0, stdout: '', stderr: '' }
    for (let i = 0; i < 30; i++) {
      r = await d1.script('status', [])
      if (/^Tasks\s+ttg-missing\.1 on \S+: Rejected/m.test(r.stdout)) break
      await new Promise((resolve) => setTimeout(resolve, 1000))
    }
    for (const n of swarm.nodes) expect(r.stdout).toMatch(new RegExp(`^(Nodes)?\\s+${n.name}( \\(this host\\))?: ready, active, (manager leader|worker)$`, 'm'))
    expect(r.stdout).toMatch(/^Services\s+ttg-missing: 0\/1 running \(replicated\), 127\.0\.0\.1:5999\/ttg-missing:v0$/m)
    expect(r.stdout).toMatch(/^Tasks\s+ttg-missing\.1 on \S+: Rejected .*\(.*No such image/m)
    expect(r.stdout).toContain('service ttg-missing 0/1 running')
    expect((await d1.node.docker(['service', 'rm', 'ttg-missing'])).code).toBe(0)
  })

  it('a node that stops: health-check on the manager is degraded, naming it', async () => {
    const [d1] = droplets as [Droplet]
    const lost = swarm.nodes[2] as SwarmNode
    await lost.kill()
    let r: ScriptResult = { code: 0, stdout: '', stderr: '' }
    for (let i = 0; i < 60; i++) {
      r = await d1.script('health-check', [])
      if (output(r).includes(`node ${lost.name} is down`)) break
      await new Promise((resolve) => setTimeout(resolve, 1000))
    }
    expect(output(r)).toMatch(new RegExp(`INFO: swarm: degraded \\(node ${lost.name} is down; 2 of 3 ready\\)`))
    expect(r.code).toBe(1)
    const json = await d1.script('health-check', ['--json'])
    const report = JSON.parse(json.stdout) as { swarm?: { status: string; nodes: { hostname: string; status: string }[] } }
    expect(report.swarm?.status).toBe('degraded')
    expect(report.swarm?.nodes.find((n) => n.hostname === lost.name)?.status).toBe('Down')
  })
})
