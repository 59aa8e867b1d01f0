import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import { aptInstall, aptUpdate } from '../commands/apt.ts'
import { firewallCommands, swarmFirewallCommands, ufwAdded } from '../commands/ufw.ts'
import { OpsError } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { ask, canPrompt } from '../core/prompt.ts'
import { addSecret, redact } from '../core/redact.ts'
import { looksTransient, retry } from '../core/retry.ts'
import { which } from 'zx'
import { $, $read, isDryRun } from '../core/shell.ts'
import { localSwarm, type LocalSwarm } from '../swarm/cluster.ts'

// setup-droplet --swarm init | --swarm join MANAGER (issue 24): this droplet's Docker becomes the
// first manager of a Swarm, or joins one. Only this step runs: a manager is usually the droplet
// set up long ago (its marker would stop a full run), and a joining node runs no stack of its own
// (the Swarm schedules the application onto it). Every part looks before it changes anything, so a
// second run changes nothing and says so; a node already in another Swarm is refused.
//
// The join token lets a machine into the cluster (and so to the secrets of the tasks scheduled on
// it): it comes from SWARM_JOIN_TOKEN or a prompt without echo, is registered for redaction, and
// goes to dockerd in the body of an Engine API call over its socket, never on a command line
// (`docker swarm join --token` would show it in /proc/PID/cmdline to every local user).

export type SwarmAction = { kind: 'init' } | { kind: 'join'; manager: string }

export const SWARM_PORT = 2377

/** `--swarm init`, `--swarm join MANAGER` (MANAGER's IP, :2377 implied); null without --swarm. */
export function swarmAction(value: string | undefined, positionals: readonly string[]): SwarmAction | null {
  if (value === undefined) {
    if (positionals.length) throw new OpsError('usage', `Unexpected argument: ${positionals[0]} (only --swarm join takes one: the manager's address)`)
    return null
  }
  if (value === 'init') {
    if (positionals.length) throw new OpsError('usage', `--swarm init takes no argument (got ${positionals[0]})`)
    return { kind: 'init' }
  }
  if (value !== 'join') throw new OpsError('usage', `--swarm ${value}: expected --swarm init or --swarm join MANAGER`)
  const manager = positionals[0]
  if (!manager) throw new OpsError('usage', "--swarm join needs the manager's address: --swarm join 10.114.0.2")
  const [host, port] = splitHostPort(manager)
  if (!net.isIP(host) || port !== SWARM_PORT) throw new OpsError('usage', `--swarm join ${manager}: expected the manager's IP address (its private one), optionally with :${SWARM_PORT}`)
  return { kind: 'join', manager: host }
}

function splitHostPort(text: string): [string, number] {
  const bracketed = /^\[([^\]]+)\]:(\d+)$/.exec(text)
  if (bracketed) return [bracketed[1] ?? '', Number(bracketed[2])]
  const v4 = /^([\d.]+):(\d+)$/.exec(text)
  if (v4) return [v4[1] ?? '', Number(v4[2])]
  return [text, SWARM_PORT]
}

export interface SwarmSettings {
  /** the other droplets' addresses: the only sources the Swarm ports are open to */
  peers: string[]
  /** SWARM_ADVERTISE_ADDR; null: found from the interface on the peers' subnet */
  advertiseAddr: string | null
  sshPort: number
}

/** SWARM_PEERS (comma or space separated IPs; this node's own may be listed) and SWARM_ADVERTISE_ADDR, validated. */
export function swarmSettings(env: NodeJS.ProcessEnv, action: SwarmAction): SwarmSettings {
  const listed = (env.SWARM_PEERS ?? '').split(/[\s,]+/).filter(Boolean)
  const bad = listed.filter((peer) => !net.isIP(peer) || isUnspecified(peer))
  if (bad.length) throw new OpsError('config', `SWARM_PEERS: ${bad.join(', ')} ${bad.length > 1 ? 'are not IP addresses' : 'is not an IP address'} (one address per droplet, no subnets: the Swarm ports open to exactly these hosts)`)
  const peers = [...new Set([...(action.kind === 'join' ? [action.manager] : []), ...listed])]
  const advertiseAddr = env.SWARM_ADVERTISE_ADDR?.trim() || null
  if (advertiseAddr && (!net.isIP(advertiseAddr) || isUnspecified(advertiseAddr))) throw new OpsError('config', `SWARM_ADVERTISE_ADDR=${advertiseAddr} is not an IP address of this droplet`)
  const sshPort = Number(env.SSH_PORT || 22)
  if (!Number.isInteger(sshPort) || sshPort < 1 || sshPort > 65535) throw new OpsError('config', `SSH_PORT=${env.SSH_PORT} is not a port`)
  return { peers, advertiseAddr, sshPort }
}

function isUnspecified(ip: string): boolean {
  return ip === '0.0.0.0' || ip === '::' || ip === '255.255.255.255'
}

type Interfaces = NodeJS.Dict<os.NetworkInterfaceInfo[]>

/** Docker's own bridges and veths are never the address the other droplets reach. */
const DOCKER_INTERFACE = /^(docker|br-|veth|docker_gwbridge)/

/**
 * The address to advertise: SWARM_ADVERTISE_ADDR if this host has it, else the one address on the
 * same subnet as the peers (a DigitalOcean VPC: eth1, 10.x); never guessed from the default route,
 * which would advertise the public address and send the overlay's traffic over the internet.
 */
export function advertiseAddress(settings: SwarmSettings, interfaces: Interfaces): string {
  const own = Object.entries(interfaces)
    .filter(([name]) => !DOCKER_INTERFACE.test(name))
    .flatMap(([, infos]) => (infos ?? []).filter((i) => !i.internal))
  if (settings.advertiseAddr) {
    if (!own.some((i) => i.address === settings.advertiseAddr)) throw new OpsError('config', `SWARM_ADVERTISE_ADDR=${settings.advertiseAddr} is not an address of this droplet (it has ${own.map((i) => i.address).join(', ') || 'none'})`)
    return settings.advertiseAddr
  }
  const others = settings.peers.filter((peer) => !own.some((i) => i.address === peer))
  const candidates = [...new Set(own.filter((i) => others.some((peer) => sameSubnet(i, peer))).map((i) => i.address))]
  if (candidates.length === 1 && candidates[0]) return candidates[0]
  const why = others.length === 0 ? 'no other droplet is listed in SWARM_PEERS' : candidates.length === 0 ? `no address of this droplet is on the same subnet as ${others.join(', ')}` : `several addresses are on the peers' subnet (${candidates.join(', ')})`
  throw new OpsError('config', `Cannot tell which address the other droplets reach this one at: ${why}. Set SWARM_ADVERTISE_ADDR to this droplet's private address`)
}

function sameSubnet(info: os.NetworkInterfaceInfo, peer: string): boolean {
  if (info.family !== 'IPv4' || net.isIPv4(peer) === false) return false
  const mask = ipv4ToInt(info.netmask)
  return (ipv4ToInt(info.address) & mask) === (ipv4ToInt(peer) & mask)
}

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((n, part) => ((n << 8) | Number(part)) >>> 0, 0)
}

/** SWARM_JOIN_TOKEN, or asked without echo: `docker swarm join-token -q worker` (or manager) on a manager prints it. */
export async function joinToken(env: NodeJS.ProcessEnv): Promise<string> {
  const given = env.SWARM_JOIN_TOKEN?.trim()
  if (given) {
    addSecret(given)
    const wrong = tokenProblem(given)
    if (wrong) throw new OpsError('config', `SWARM_JOIN_TOKEN ${wrong}`)
    return given
  }
  if (!canPrompt()) throw new OpsError('config', 'SWARM_JOIN_TOKEN is not set and there is no terminal to ask for it: on the manager, `docker swarm join-token -q worker` prints it')
  return ask('Swarm join token (on the manager: docker swarm join-token -q worker)', { secret: true, validate: tokenProblem })
}

export function tokenProblem(token: string): string | null {
  return /^SWMTKN-1-[0-9a-z]{20,}-[0-9a-z]{20,}$/.test(token) ? null : 'is not a Swarm join token (SWMTKN-1-...)'
}

// ---- the step -----------------------------------------------------------------------------------

export async function setUpSwarm(action: SwarmAction, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  log.info(action.kind === 'init' ? 'Swarm: this droplet as its first manager' : `Swarm: joining the one managed by ${action.manager}`)
  if (process.getuid?.() !== 0 && !isDryRun()) throw new OpsError('config', 'setup-droplet --swarm must run as root: it configures the firewall and Docker')
  const settings = swarmSettings(env, action)
  await installDockerAndUfw()
  // A dry run on a droplet without Docker only printed its installation: nothing to ask yet.
  const local = isDryRun() && !which.sync('docker', { nothrow: true }) ? NOT_IN_A_SWARM : await localSwarm()
  if (isAlreadyDone(action, local)) {
    await openSwarmPorts(settings, local.nodeAddr)
    return
  }
  const advertise = advertiseAddress(settings, os.networkInterfaces())
  const token = action.kind === 'join' ? await joinToken(env) : null
  await openSwarmPorts(settings, advertise)
  if (action.kind === 'init') await initSwarm(advertise)
  else if (token) await joinSwarm(action.manager, advertise, token)
}

const NOT_IN_A_SWARM: LocalSwarm = { state: 'inactive', nodeAddr: '', manager: false, managers: [], clusterId: null, error: '' }

/** Docker and ufw, only when missing: on the first droplet setup installed both. */
async function installDockerAndUfw(): Promise<void> {
  const missing = [...(which.sync('docker', { nothrow: true }) ? [] : ['docker.io']), ...(which.sync('ufw', { nothrow: true }) ? [] : ['ufw'])]
  if (missing.length === 0) return
  log.info(`Installing ${missing.join(' ')}`)
  await retry(() => aptUpdate(), { isTransient: looksTransient, what: 'apt-get update' })
  await retry(() => aptInstall(missing), { isTransient: looksTransient, what: 'apt-get install' })
  if (missing.includes('docker.io')) await $`systemctl enable --now docker.service`
}

/**
 * True when this node is already where the action would put it (said so, nothing else changed but
 * the firewall's peers); refuses every state from which the action would not do what was asked.
 */
export function isAlreadyDone(action: SwarmAction, local: LocalSwarm): boolean {
  const leave = 'leave it first (`docker swarm leave`, which stops its tasks here) and run again'
  if (local.state === 'inactive') return false
  if (local.state === 'locked') throw new OpsError('refused', 'This node is in a Swarm that is locked (autolock): unlock it with `docker swarm unlock` first. Nothing was changed')
  if (local.state !== 'active') throw new OpsError('refused', `This node's Swarm membership is ${local.state}${local.error ? ` (${local.error})` : ''}: ${leave}. Nothing was changed`)
  const managers = local.managers.join(', ') || 'unknown'
  if (action.kind === 'init') {
    if (!local.manager) throw new OpsError('refused', `This node is already a worker in a Swarm (managers: ${managers}): --swarm init would not make it a manager. Run --swarm init on a manager, or ${leave}. Nothing was changed`)
    log.info(`Already a manager of Swarm ${local.clusterId ?? '?'} (advertising ${local.nodeAddr}): left as it is`)
    return true
  }
  const expected = action.manager.includes(':') ? `[${action.manager}]:${SWARM_PORT}` : `${action.manager}:${SWARM_PORT}`
  if (!local.managers.includes(expected)) {
    throw new OpsError('refused', `This node is already in another Swarm (managers: ${managers}), not the one managed by ${action.manager} (if it is the same Swarm, name its manager by one of those addresses); otherwise ${leave}. Nothing was changed`)
  }
  log.info(`Already in the Swarm managed by ${action.manager} (as a ${local.manager ? 'manager' : 'worker'}, advertising ${local.nodeAddr}): left as it is`)
  return true
}

/**
 * ufw: the Swarm ports open to the peers only. On a droplet whose firewall is not on yet (a new
 * node, setup never run) the same base policy setup sets first: incoming denied, SSH allowed; on
 * one where it is, its other rules are left as they are.
 */
async function openSwarmPorts(settings: SwarmSettings, ownAddress: string): Promise<void> {
  const peers = settings.peers.filter((peer) => peer !== ownAddress)
  const added = await ufwAdded()
  const active = /^Status: active/m.test((await $read({ nothrow: true })`ufw status`).stdout)
  const base = active ? [] : firewallCommands(added, { webhook: added.includes('allow 80/tcp'), sshPort: settings.sshPort })
  const commands = [...swarmFirewallCommands(added, peers), ...base]
  for (const argv of commands) await $({ timeoutMs: 60_000 })`${argv}`
  if (peers.length === 0) log.warn('SWARM_PEERS names no other droplet: the Swarm ports stay closed until it does (run this again with every droplet\'s address)')
  else log.info(`Firewall: Swarm ports 2377/tcp, 7946/tcp+udp, 4789/udp open to ${peers.join(', ')} only${commands.length ? '' : ' (already so)'}`)
}

/** The control plane listens on the private address only, not on every interface. */
async function initSwarm(advertise: string): Promise<void> {
  await $`docker swarm init --advertise-addr ${advertise} --listen-addr ${hostPort(advertise)}`
  log.info(`Swarm initialised: this droplet is its manager, at ${advertise}`)
  log.info(`Next droplet: on it, SWARM_PEERS=<every droplet's address> setup-droplet --swarm join ${advertise}, with the token \`docker swarm join-token -q worker\` prints here (asked without echo, or SWARM_JOIN_TOKEN)`)
}

async function joinSwarm(manager: string, advertise: string, token: string): Promise<void> {
  const body = { ListenAddr: hostPort(advertise), AdvertiseAddr: advertise, RemoteAddrs: [hostPort(manager)], JoinToken: token }
  if (isDryRun()) {
    process.stdout.write(`[dry-run] ${redact(`POST /swarm/join to dockerd ${JSON.stringify(body)}`)}\n`)
    return
  }
  const { status, text } = await dockerApi('POST', '/swarm/join', body, 120_000)
  if (status !== 200) throw new OpsError('command_failed', `Joining the Swarm at ${manager} failed: ${redact(apiMessage(text))} (Engine API HTTP ${status})`)
  const joined = await localSwarm()
  log.info(`Joined the Swarm managed by ${manager} as a ${joined.manager ? 'manager' : 'worker'}, advertising ${advertise}`)
}

function hostPort(ip: string): string {
  return net.isIPv6(ip) ? `[${ip}]:${SWARM_PORT}` : `${ip}:${SWARM_PORT}`
}

function apiMessage(text: string): string {
  try {
    const parsed: unknown = JSON.parse(text)
    if (typeof parsed === 'object' && parsed !== null && 'message' in parsed && typeof parsed.message === 'string') return parsed.message.slice(0, 500)
  } catch {
    // not JSON: the text itself
  }
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, 500)
}

/** dockerd's socket: DOCKER_HOST when it names a unix socket, else Docker's default. */
function dockerSocket(): string {
  const host = process.env.DOCKER_HOST
  return host?.startsWith('unix://') ? host.slice('unix://'.length) : '/var/run/docker.sock'
}

function dockerApi(method: string, path: string, body: unknown, timeoutMs: number): Promise<{ status: number; text: string }> {
  const payload = JSON.stringify(body)
  return new Promise((resolve, reject) => {
    const request = http.request({ socketPath: dockerSocket(), method, path, headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) }, timeout: timeoutMs }, (response) => {
      let text = ''
      response.setEncoding('utf8')
      response.on('data', (chunk: string) => {
        if (text.length < 10_000) text += chunk
      })
      response.on('end', () => resolve({ status: response.statusCode ?? 0, text }))
      response.on('error', reject)
    })
    request.on('timeout', () => request.destroy(new OpsError('timeout', `dockerd did not answer ${method} ${path} within ${timeoutMs / 1000}s`)))
    request.on('error', (error) => reject(error instanceof OpsError ? error : new OpsError('command_failed', `Cannot reach dockerd at ${dockerSocket()}: ${error.message}`)))
    request.end(payload)
  })
}
