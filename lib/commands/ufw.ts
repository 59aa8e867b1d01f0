import { YAML } from 'zx'
import { $read } from '../core/shell.ts'

// The firewall: the ufw commands setup wants (argv, for `$` to interpolate), the rules already
// there, and the ports compose would open past it.

export const WEBHOOK_PORTS = ['80/tcp', '443/tcp'] as const

function ufw(...args: string[]): string[] {
  return ['ufw', ...args]
}

/** The rules added so far (none where ufw is missing): `ufw show added` works whether or not the firewall is active yet. */
export async function ufwAdded(): Promise<string[]> {
  return parseUfwAdded((await $read({ nothrow: true, timeoutMs: 60_000 })`ufw show added`).stdout)
}

/** The rules `ufw show added` lists, as the words after `ufw` ("allow 22/tcp"). */
export function parseUfwAdded(text: string): string[] {
  return text.split('\n').map((l) => /^ufw (.+)$/.exec(l.trim())?.[1]?.trim()).filter((r): r is string => Boolean(r))
}

/**
 * Deny incoming, allow SSH, and 80/443 only in webhook mode; a polling host that was once in
 * webhook mode loses its 80/443 rules. Rules already present are not added again.
 */
export function firewallCommands(added: string[], options: { webhook: boolean; sshPort: number }): string[][] {
  const has = (rule: string) => added.includes(rule)
  const wanted = [`${options.sshPort}/tcp`, ...(options.webhook ? WEBHOOK_PORTS : [])]
  const unwanted = options.webhook ? [] : WEBHOOK_PORTS.filter((port) => has(`allow ${port}`))
  return [
    ufw('default', 'deny', 'incoming'),
    ufw('default', 'allow', 'outgoing'),
    ...wanted.filter((port) => !has(`allow ${port}`)).map((port) => ufw('allow', port)),
    ...unwanted.map((port) => ufw('delete', 'allow', port)),
    // --force: enabling over SSH otherwise asks whether to cut the connection; SSH is allowed above.
    ufw('--force', 'enable'),
  ]
}

/**
 * Docker publishes ports by writing its own iptables rules, ahead of ufw's: a published port is
 * open to the internet whatever ufw says. Only nginx, in webhook mode, may publish, and only 80
 * and 443; no service may share the host's network. Returns what breaks that, per service.
 */
export function publishedPortProblems(composeYaml: string): string[] {
  const doc = (YAML.parse(composeYaml) ?? {}) as { services?: Record<string, Record<string, unknown> | null> }
  const problems: string[] = []
  for (const [name, service] of Object.entries(doc.services ?? {})) {
    if (!service) continue
    if (service.network_mode === 'host') problems.push(`${name} uses network_mode: host (every port it opens is public)`)
    const ports = Array.isArray(service.ports) ? service.ports : []
    if (ports.length === 0) continue
    if (name !== 'nginx') {
      problems.push(`${name} publishes ${ports.map(describePort).join(', ')}`)
      continue
    }
    const targets = ports.map(containerPort)
    const other = targets.filter((p) => p !== '80' && p !== '443')
    if (other.length) problems.push(`nginx publishes container port${other.length > 1 ? 's' : ''} ${other.join(', ')} besides 80 and 443`)
  }
  return problems
}

function describePort(port: unknown): string {
  return typeof port === 'object' && port ? JSON.stringify(port) : String(port)
}

/** "80", "127.0.0.1:8080:80", "${X:-80}:80/tcp", { target: 80 } -> the container side. */
function containerPort(port: unknown): string {
  if (typeof port === 'object' && port && 'target' in port) return String((port as { target: unknown }).target)
  const text = String(port).replace(/\/(tcp|udp)$/, '')
  return text.slice(text.lastIndexOf(':') + 1)
}

// ---- node_exporter (monitoring) ----------------------------------------------------------------

export const NODE_EXPORTER_PORT = 9100

/** Prometheus's subnet, and only it, may reach node_exporter (ufw's own syntax, as `ufw show added` prints it). */
export function nodeExporterRule(subnet: string): string {
  return `allow from ${subnet} to any port ${NODE_EXPORTER_PORT} proto tcp`
}

const NODE_EXPORTER_RULE = new RegExp(`^allow from \\S+ to any port ${NODE_EXPORTER_PORT} proto tcp$`)

/** The rule added when monitoring is on; any other subnet's (an old MONITORING_SUBNET), or every one when off, deleted. */
export function monitoringFirewallCommands(added: string[], on: boolean, subnet: string): string[][] {
  const wanted = on ? nodeExporterRule(subnet) : null
  const stale = added.filter((rule) => NODE_EXPORTER_RULE.test(rule) && rule !== wanted)
  return [
    ...(wanted && !added.includes(wanted) ? [ufw(...wanted.split(' '))] : []),
    ...stale.map((rule) => ufw('delete', ...rule.split(' '))),
  ]
}

// ---- Docker Swarm ------------------------------------------------------------------------------

/** What the nodes of a Swarm say to each other: cluster management, gossip, the overlay's VXLAN. */
export const SWARM_PORTS = [
  { port: 2377, proto: 'tcp' },
  { port: 7946, proto: 'tcp' },
  { port: 7946, proto: 'udp' },
  { port: 4789, proto: 'udp' },
] as const

/** A peer's rule, in ufw's own words as `ufw show added` prints it. */
export function swarmRule(peer: string, port: number, proto: string): string {
  return `allow from ${peer} to any port ${port} proto ${proto}`
}

/**
 * The Swarm ports open to each peer and to nothing else: a rule for a peer no longer listed, or
 * one opening a Swarm port to anywhere (VXLAN carries no authentication: anyone reaching 4789 can
 * inject packets into the overlay), is deleted. Rules already present are not added again.
 */
export function swarmFirewallCommands(added: string[], peers: readonly string[]): string[][] {
  const wanted = peers.flatMap((peer) => SWARM_PORTS.map(({ port, proto }) => swarmRule(peer, port, proto)))
  const swarmPort = new RegExp(`^allow (?:.* )?(?:port )?(?:${[...new Set(SWARM_PORTS.map((p) => p.port))].join('|')})\\b`)
  const stale = added.filter((rule) => swarmPort.test(rule) && !wanted.includes(rule))
  return [
    ...wanted.filter((rule) => !added.includes(rule)).map((rule) => ufw(...rule.split(' '))),
    ...stale.map((rule) => ufw('delete', ...rule.split(' '))),
  ]
}
