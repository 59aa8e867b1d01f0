import { spawn, spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT, type ScriptResult } from './scripts.ts'
import { exec } from './stack.ts'

// Docker engines for the Swarm e2e tests: each node is a container of the image
// test/e2e/bed/swarm-node.sh builds (Debian's docker.io on the bed's base), run without
// --privileged (refused on these machines: CAP_SYS_RESOURCE is not in the host's bounding set).
// Each node's dockerd also listens on a socket bind-mounted out to NODES_ROOT/<node>/docker.sock,
// so the toolkit's scripts run ON THE HOST with DOCKER_HOST=<node>.dockerHost, as an operator
// runs them on the manager droplet.
//
// What the bed cannot show: there is no ip_vs module here, so a service's virtual IP and the
// ingress routing mesh fail (`No route to host`). Stacks under test use `endpoint_mode: dnsrr` and
// host-mode published ports (reached at <node>.ip); production keeps Swarm's defaults.
//
// Idempotent and reused between runs: containers, their /var/lib/docker volumes and the network are
// named <prefix>-… and carry the label com.docker.compose.project=<prefix> (prefix starting with
// "ttg"), so test/e2e/bed/teardown.sh removes them with the compose projects. A node's volume
// keeps its loaded images, so only the first run pays for `docker save | docker load` (about 20 s
// a node). Nodes already running as one Swarm of the right size are taken as they are.
export const NODES_ROOT = '/var/lib/ttg-e2e-swarm'

export interface SwarmNode {
  /** short name (node1, …), also the node's hostname and Swarm node name */
  name: string
  /** the container on the bed's engine */
  container: string
  /** the node's address on the nodes' network, where its host-mode published ports answer */
  ip: string
  /** DOCKER_HOST for a docker CLI (or the toolkit) on the host to drive this node's engine */
  dockerHost: string
  /** the host's docker CLI against this node */
  docker(args: string[], env?: Record<string, string>): Promise<ScriptResult>
  /** SIGKILL the whole node (its engine and every task on it), as a droplet that loses power */
  kill(): Promise<void>
  /** start a killed node again and wait until its engine answers (it rejoins the Swarm by itself) */
  start(): Promise<void>
}

export interface SwarmNodes {
  prefix: string
  /** the bridge network on the bed's engine the nodes share (also for a "managed" database beside them) */
  network: string
  nodes: SwarmNode[]
  /** nodes[0] when joined: the one manager */
  manager: SwarmNode
  /** copies images from the bed's engine into every node that lacks them (docker save | docker load) */
  loadImages(refs: string[]): Promise<void>
  /** removes the containers, their volumes and the network */
  destroy(): Promise<void>
}

export interface SwarmOptions {
  /** containers and network are named <prefix>-node1…; must start with "ttg" (teardown.sh) */
  prefix?: string
  count?: number
  /** true: nodes[0] runs `swarm init`, the others join as workers; false: plain engines, out of any Swarm */
  join?: boolean
  /** images every node gets before this returns */
  images?: string[]
}

export function ensureSwarmNodeImage(): string {
  const built = spawnSync('bash', [path.join(ROOT, 'test/e2e/bed/swarm-node.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })
  if (built.status !== 0) throw new Error('test/e2e/bed/swarm-node.sh failed (see its [bed] lines above)')
  const image = built.stdout.trim().split('\n').pop()
  if (!image) throw new Error('test/e2e/bed/swarm-node.sh printed no image name')
  return image
}

export async function ensureSwarmNodes(options: SwarmOptions = {}): Promise<SwarmNodes> {
  const prefix = options.prefix ?? 'ttgswarm'
  const count = options.count ?? 3
  const join = options.join ?? true
  if (!prefix.startsWith('ttg') || !/^[a-z0-9-]+$/.test(prefix)) throw new Error(`prefix ${prefix}: lowercase, starting with "ttg"`)
  const image = ensureSwarmNodeImage()
  const network = prefix
  const label = `com.docker.compose.project=${prefix}`
  if ((await exec(['docker', 'network', 'inspect', network])).code !== 0) {
    await must(exec(['docker', 'network', 'create', '--label', label, network]), `creating network ${network}`)
  }
  const names = Array.from({ length: count }, (_, i) => `node${i + 1}`)
  const nodes = names.map((name) => node(prefix, name))
  const reusable = await isFormed(nodes, join)
  if (!reusable) {
    for (const n of nodes) await exec(['docker', 'rm', '-f', '-v', n.container])
    for (const n of nodes) {
      fs.mkdirSync(path.dirname(socketPath(prefix, n.name)), { recursive: true })
      fs.rmSync(socketPath(prefix, n.name), { force: true })
      // Created here, not by docker run, so that it carries the label teardown.sh looks for.
      await must(exec(['docker', 'volume', 'create', '--label', label, `${prefix}-${n.name}-docker`]), `creating the volume of ${n.name}`)
      await must(exec([
        'docker', 'run', '--detach', '--name', n.container, '--hostname', n.name, '--label', label, '--network', network,
        '--cap-add', 'SYS_ADMIN', '--cap-add', 'NET_ADMIN', '--cap-add', 'SYS_PTRACE',
        '--security-opt', 'seccomp=unconfined', '--security-opt', 'apparmor=unconfined',
        '-e', `NODE_NAME=${prefix}-${n.name}`,
        '-v', '/sys/fs/cgroup:/sys/fs/cgroup:rw',
        '-v', `${prefix}-${n.name}-docker:/var/lib/docker`,
        '-v', `${path.dirname(socketPath(prefix, n.name))}:/run/ttg-node`,
        image,
      ]), `starting ${n.container}`)
    }
    for (const n of nodes) await waitForEngine(n)
    for (const n of nodes) {
      n.ip = await containerIp(n.container, network)
      // A node's volume outlives its container: any Swarm it was in is gone with the old containers.
      await n.docker(['swarm', 'leave', '--force'])
    }
    if (join) await formSwarm(nodes)
  }
  for (const n of nodes) n.ip = await containerIp(n.container, network)
  const swarm: SwarmNodes = {
    prefix,
    network,
    nodes,
    manager: nodes[0] as SwarmNode,
    loadImages: (refs) => loadImages(nodes, refs),
    async destroy() {
      for (const n of nodes) await exec(['docker', 'rm', '-f', '-v', n.container])
      for (const n of nodes) await exec(['docker', 'volume', 'rm', `${prefix}-${n.name}-docker`])
      await exec(['docker', 'network', 'rm', network])
      fs.rmSync(path.join(NODES_ROOT, prefix), { recursive: true, force: true })
    },
  }
  if (options.images?.length) await swarm.loadImages(options.images)
  return swarm
}

function socketPath(prefix: string, name: string): string {
  return path.join(NODES_ROOT, prefix, name, 'docker.sock')
}

function node(prefix: string, name: string): SwarmNode {
  const container = `${prefix}-${name}`
  const dockerHost = `unix://${socketPath(prefix, name)}`
  const n: SwarmNode = {
    name,
    container,
    ip: '',
    dockerHost,
    docker: (args, env = {}) => exec(['docker', ...args], { ...env, DOCKER_HOST: dockerHost }),
    async kill() {
      await must(exec(['docker', 'kill', container]), `killing ${container}`)
    },
    async start() {
      fs.rmSync(socketPath(prefix, name), { force: true })
      await must(exec(['docker', 'start', container]), `starting ${container}`)
      await waitForEngine(n)
    },
  }
  return n
}

/** Every node's engine answers and, when joined, the first manages a Swarm of exactly these nodes, all ready. */
async function isFormed(nodes: SwarmNode[], join: boolean): Promise<boolean> {
  for (const n of nodes) {
    const state = await n.docker(['info', '--format', '{{.Swarm.LocalNodeState}}'])
    if (state.code !== 0) return false
    if (state.stdout.trim() !== (join ? 'active' : 'inactive')) return false
  }
  if (!join) return true
  const listed = await (nodes[0] as SwarmNode).docker(['node', 'ls', '--format', '{{.Hostname}} {{.Status}}'])
  const ready = listed.stdout.trim().split('\n').filter((l) => l.endsWith(' Ready')).map((l) => l.split(' ')[0]).sort()
  return listed.code === 0 && ready.join(' ') === nodes.map((n) => n.name).sort().join(' ')
}

async function formSwarm(nodes: SwarmNode[]): Promise<void> {
  const [manager, ...workers] = nodes as [SwarmNode, ...SwarmNode[]]
  // A 2 s heartbeat: a killed node is declared down in seconds, not the default's ~15 s.
  await must(manager.docker(['swarm', 'init', '--advertise-addr', manager.ip, '--dispatcher-heartbeat', '2s']), 'swarm init')
  const token = (await must(manager.docker(['swarm', 'join-token', '-q', 'worker']), 'swarm join-token')).trim()
  for (const w of workers) await must(w.docker(['swarm', 'join', '--advertise-addr', w.ip, '--token', token, `${manager.ip}:2377`]), `swarm join of ${w.name}`)
  const deadline = Date.now() + 60_000
  while (!(await isFormed(nodes, true))) {
    if (Date.now() > deadline) throw new Error(`the Swarm of ${nodes.map((n) => n.name).join(', ')} did not become ready in 60 s`)
    await sleep(500)
  }
}

async function loadImages(nodes: SwarmNode[], refs: string[]): Promise<void> {
  await Promise.all(nodes.map(async (n) => {
    const missing: string[] = []
    for (const ref of refs) if ((await n.docker(['image', 'inspect', '--format', '{{.Id}}', ref])).code !== 0) missing.push(ref)
    if (missing.length === 0) return
    // One tar for all: the images share the bed's base layers, written once.
    await pipeInto(['docker', 'save', ...missing], ['docker', 'exec', '-i', n.container, 'docker', 'load', '--quiet'], `loading ${missing.join(', ')} into ${n.container}`)
  }))
}

function pipeInto(from: string[], to: string[], what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const producer = spawn(from[0] as string, from.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] })
    const consumer = spawn(to[0] as string, to.slice(1), { stdio: ['pipe', 'ignore', 'pipe'] })
    let stderr = ''
    producer.stderr.on('data', (d) => (stderr += d))
    consumer.stderr.on('data', (d) => (stderr += d))
    producer.stdout.pipe(consumer.stdin)
    let producerCode: number | null = null
    producer.on('close', (code) => (producerCode = code))
    consumer.on('close', (code) => (code === 0 && producerCode === 0 ? resolve() : reject(new Error(`${what} failed (save ${producerCode}, load ${code}): ${stderr.trim()}`))))
    producer.on('error', reject)
    consumer.on('error', reject)
  })
}

async function waitForEngine(n: SwarmNode): Promise<void> {
  const deadline = Date.now() + 60_000
  while ((await n.docker(['version', '--format', '{{.Server.Version}}'])).code !== 0) {
    if (Date.now() > deadline) {
      const logs = await exec(['docker', 'logs', '--tail', '20', n.container])
      throw new Error(`the engine of ${n.container} did not answer in 60 s: ${logs.stderr.trim()}`)
    }
    await sleep(300)
  }
}

async function containerIp(container: string, network: string): Promise<string> {
  const r = await must(exec(['docker', 'inspect', '--format', `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`, container]), `inspecting ${container}`)
  return r.trim()
}

async function must(p: Promise<ScriptResult>, what: string): Promise<string> {
  const r = await p
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`)
  return r.stdout
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
