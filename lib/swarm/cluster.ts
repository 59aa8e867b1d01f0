import { parseJsonOrNull } from '../core/json.ts'
import { z } from 'zod'
import { messageOf } from '../core/errors.ts'
import { $read } from '../core/shell.ts'
import type { ServiceHealth } from '../stack/health.ts'

// A Docker Swarm as this host sees it: its own membership (`docker info`), and on a manager the
// nodes, services and the tasks that do not run. Every name, image and error in that output comes
// from other machines (a hostname is whatever the droplet was called, an error is a daemon's text):
// each line is parsed with zod and cleaned before it reaches the screen or the log.

/** This node's membership, from `docker info --format '{{json .Swarm}}'`. */
export interface LocalSwarm {
  /** Docker's LocalNodeState: inactive, pending, active, error or locked */
  state: string
  /** the address this node advertises to the others ('' when not in a Swarm) */
  nodeAddr: string
  /** a manager (ControlAvailable): it can list nodes and services */
  manager: boolean
  /** the managers this node knows, host:port */
  managers: string[]
  /** the cluster's ID, which only a manager knows; null elsewhere */
  clusterId: string | null
  error: string
}

const localSchema = z.object({
  NodeID: z.string(),
  NodeAddr: z.string(),
  LocalNodeState: z.string(),
  ControlAvailable: z.boolean(),
  Error: z.string(),
  RemoteManagers: z.array(z.object({ NodeID: z.string(), Addr: z.string() })).nullish(),
  Cluster: z.object({ ID: z.string() }).nullish(),
})

export function parseLocalSwarm(json: string): LocalSwarm {
  const s = localSchema.parse(JSON.parse(json))
  return {
    state: clean(s.LocalNodeState, 20),
    nodeAddr: clean(s.NodeAddr, 60),
    manager: s.ControlAvailable,
    managers: (s.RemoteManagers ?? []).map((m) => clean(m.Addr, 60)),
    clusterId: s.Cluster ? clean(s.Cluster.ID, 40) : null,
    error: clean(s.Error, 300),
  }
}

export async function localSwarm(): Promise<LocalSwarm> {
  return parseLocalSwarm((await $read({ timeoutMs: 30_000 })`docker info --format ${'{{json .Swarm}}'}`).stdout)
}

// ---- the cluster, read on a manager -------------------------------------------------------------

export interface SwarmNode {
  hostname: string
  /** Ready, Down, Unknown, Disconnected */
  status: string
  /** Active, Pause, Drain: the operator's choice, not a fault */
  availability: string
  /** Leader, Reachable, Unreachable; null for a worker */
  manager_status: string | null
  self: boolean
}

export interface SwarmService {
  name: string
  mode: string
  running: number
  desired: number
  image: string
}

export interface SwarmTask {
  name: string
  node: string
  desired_state: string
  /** "Rejected 2 minutes ago" */
  current_state: string
  error: string
}

export interface ClusterStatus {
  nodes: SwarmNode[]
  services: SwarmService[]
  /** tasks that should run and do not, and tasks that ended with an error */
  tasks_not_running: SwarmTask[]
}

const nodeSchema = z.object({ Hostname: z.string(), Status: z.string(), Availability: z.string(), ManagerStatus: z.string(), Self: z.boolean().optional() })
const serviceSchema = z.object({ Name: z.string(), Mode: z.string(), Replicas: z.string(), Image: z.string() })
const taskSchema = z.object({ Name: z.string(), Node: z.string(), DesiredState: z.string(), CurrentState: z.string(), Error: z.string() })

/** One JSON object a line (`--format '{{json .}}'`); a line that is not one is an error, not skipped. */
function jsonLines<T>(text: string, schema: z.ZodType<T>, what: string): T[] {
  return text.split('\n').filter((line) => line.trim()).map((line) => {
    const parsed = schema.safeParse(parseJsonOrNull(line))
    if (!parsed.success) throw new Error(`unexpected ${what} line from docker: ${clean(line, 120)}`)
    return parsed.data
  })
}


export function parseNodes(text: string): SwarmNode[] {
  return jsonLines(text, nodeSchema, 'node').map((n) => ({
    hostname: clean(n.Hostname, 64),
    status: clean(n.Status, 20),
    availability: clean(n.Availability, 20),
    manager_status: n.ManagerStatus ? clean(n.ManagerStatus, 20) : null,
    self: n.Self === true,
  }))
}

export function parseServices(text: string): SwarmService[] {
  return jsonLines(text, serviceSchema, 'service').map((s) => {
    // "2/3", "0/1 (max 1 per node)", "1/1 (1/1 completed)" for a job
    const [, running = '0', desired = '0'] = /^(\d+)\/(\d+)/.exec(s.Replicas) ?? []
    return { name: clean(s.Name, 64), mode: clean(s.Mode, 20), running: Number(running), desired: Number(desired), image: clean(s.Image.replace(/@sha256:[0-9a-f]+$/, ''), 120) }
  })
}

/** Tasks that should run and do not, and earlier ones that ended with an error (the why of a restart). */
export function parseTasksNotRunning(text: string): SwarmTask[] {
  return jsonLines(text, taskSchema, 'task')
    .map((t) => ({
      // older tasks of a slot are indented in docker's own listing: " \_ bot.1"
      name: clean(t.Name.replace(/^\s*\\_\s*/, ''), 80),
      node: clean(t.Node, 64),
      desired_state: clean(t.DesiredState, 20),
      current_state: clean(t.CurrentState, 60),
      error: clean(t.Error, 300),
    }))
    .filter((t) => !t.current_state.startsWith('Running') && (t.desired_state === 'Running' || t.error !== ''))
}

/** On a manager, the whole cluster; null on a host that is not one (compose mode, or a worker). */
export async function readCluster(): Promise<ClusterStatus | null> {
  // Docker unreachable: health says so already; this section only exists on a Swarm manager.
  const local = await localSwarm().catch(() => null)
  if (!local || local.state !== 'active' || !local.manager) return null
  const read = { timeoutMs: 30_000 }
  const nodes = parseNodes((await $read(read)`docker node ls --format ${'{{json .}}'}`).stdout)
  const services = parseServices((await $read(read)`docker service ls --format ${'{{json .}}'}`).stdout)
  const ids = (await $read(read)`docker service ls --quiet`).stdout.split('\n').filter(Boolean)
  const tasks = ids.length === 0 ? '' : (await $read(read)`docker service ps --no-trunc --format ${'{{json .}}'} ${ids}`).stdout
  return { nodes, services, tasks_not_running: parseTasksNotRunning(tasks) }
}

// ---- verdicts -----------------------------------------------------------------------------------

/** "node droplet-3 is down": a node that does not answer, or a manager the others cannot reach. */
export function nodeProblems(nodes: readonly SwarmNode[]): string[] {
  return nodes.flatMap((n) => {
    if (n.status !== 'Ready') return [`node ${n.hostname} is ${n.status.toLowerCase()}`]
    if (n.manager_status === 'Unreachable') return [`manager ${n.hostname} is unreachable`]
    return []
  })
}

/** What status puts in "Needs attention" for the cluster. */
export function clusterAttention(c: ClusterStatus): string[] {
  const short = c.services.filter((s) => s.running < s.desired).map((s) => `service ${s.name} ${s.running}/${s.desired} running`)
  return [...nodeProblems(c.nodes), ...short]
}

/**
 * health-check's line for the cluster, on a manager: degraded while a node is down or unreachable
 * (the Swarm reschedules its tasks, but has lost capacity, and a lost manager brings quorum
 * closer); unhealthy when the nodes cannot be listed (no leader: nothing can be deployed). Null off
 * a Swarm manager: compose mode has no such line.
 */
export async function swarmHealth(): Promise<ServiceHealth | null> {
  const local = await localSwarm().catch(() => null)
  if (!local || local.state !== 'active' || !local.manager) return null
  let nodes: SwarmNode[]
  try {
    nodes = parseNodes((await $read({ timeoutMs: 10_000 })`docker node ls --format ${'{{json .}}'}`).stdout)
  } catch (error) {
    return { status: 'unhealthy', response_time_ms: null, detail: `cannot list the nodes: ${clean(messageOf(error), 300)}`, timed_out: false }
  }
  return nodesHealth(nodes)
}

export function nodesHealth(nodes: readonly SwarmNode[]): ServiceHealth {
  const problems = nodeProblems(nodes)
  const ready = nodes.length - problems.length
  const detail = problems.length === 0 ? `${nodes.length} node${nodes.length === 1 ? '' : 's'} ready` : `${problems.join(', ')}; ${ready} of ${nodes.length} ready`
  return { status: problems.length === 0 ? 'healthy' : 'degraded', response_time_ms: null, detail, timed_out: false, nodes }
}

// ---- the screen ---------------------------------------------------------------------------------

/** status's Swarm rows, [label, text]: an empty label continues the row above. */
export function clusterRows(c: ClusterStatus): [string, string][] {
  const rows: [string, string][] = []
  const nodes = c.nodes.map((n) => `${n.hostname}${n.self ? ' (this host)' : ''}: ${n.status.toLowerCase()}, ${n.availability.toLowerCase()}${n.manager_status ? `, manager ${n.manager_status.toLowerCase()}` : ', worker'}`)
  rows.push(['Nodes', nodes[0] ?? 'none'], ...nodes.slice(1).map((line): [string, string] => ['', line]))
  const services = c.services.map((s) => `${s.name}: ${s.running}/${s.desired} running (${s.mode}), ${s.image}`)
  rows.push(['Services', services[0] ?? 'none'], ...services.slice(1).map((line): [string, string] => ['', line]))
  const shown = c.tasks_not_running.slice(0, MAX_TASKS)
  const tasks = shown.map((t) => `${t.name} on ${t.node || 'no node'}: ${t.current_state}${t.error ? ` (${t.error})` : ''}`)
  if (c.tasks_not_running.length > MAX_TASKS) tasks.push(`... and ${c.tasks_not_running.length - MAX_TASKS} more (docker service ps)`)
  rows.push(['Tasks', tasks[0] ?? 'every task that should run is running'], ...tasks.slice(1).map((line): [string, string] => ['', line]))
  return rows
}

const MAX_TASKS = 10

/** Printable ASCII only, bounded: a hostile name cannot move the cursor or flood the screen. */
function clean(text: string, max: number): string {
  const printable = text.replace(/[^\x20-\x7e]/g, '?')
  return printable.length <= max ? printable : `${printable.slice(0, max - 3)}...`
}
