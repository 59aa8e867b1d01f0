// Runs one command for the benchmark and measures it from the outside: wall time, the peak memory
// of its whole process tree, the CPU each kind of process used, and what the rest of the machine
// was doing meanwhile. Everything comes from /proc, sampled every SAMPLE_MS; nothing is asked of
// the command itself, so the tool and the shell baselines are measured the same way.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import { performance } from 'node:perf_hooks'

const SAMPLE_MS = 100
const PAGE_BYTES = systemNumber('PAGESIZE', 4096)
const CLOCK_TICKS = systemNumber('CLK_TCK', 100)

export interface TimedLine {
  /** seconds since the command was started, when the line reached us */
  at: number
  stream: 'stdout' | 'stderr'
  text: string
}

export interface Measurement {
  label: string
  exitCode: number
  seconds: number
  /** peak of the summed RSS of the command and all its descendants (shared pages count once per process) */
  peakRssBytes: number
  /** peak of the summed PSS (shared pages split between the processes sharing them) */
  peakPssBytes: number
  /** the summed RSS of the tree at every sample, to find the peak of each phase */
  rssSeries: { at: number; bytes: number }[]
  /** RSS per process at the sample where the RSS sum peaked */
  rssAtPeak: { name: string; bytes: number }[]
  /** CPU seconds per kind of process in the tree (utime + stime, last value seen for each pid) */
  treeCpu: Record<string, number>
  /** CPU seconds of the PostgreSQL server processes (not in the tree; they serve it over TCP) */
  serverCpuSeconds: number
  /** CPU seconds used by everything else on the machine (other jobs, this benchmark's sampler excluded) */
  otherCpuSeconds: number
  lines: TimedLine[]
  stdout: string
  stderr: string
}

export interface MeterOptions {
  env?: NodeJS.ProcessEnv
  cwd?: string
  /** the postmaster's pid, so server CPU can be attributed separately */
  postmasterPid?: number
}

interface Proc {
  pid: number
  ppid: number
  comm: string
  rssBytes: number
  cpuTicks: number
}

// The child currently measured, so a Ctrl-C of the benchmark can end it (and only it).
let current: ChildProcess | null = null

/** Ends the command being measured, if any: its own process group, which we created. */
export function killCurrent(): void {
  if (current?.pid && current.exitCode === null) {
    try {
      process.kill(-current.pid, 'SIGTERM')
    } catch {
      // already gone
    }
  }
}

export async function measure(label: string, argv: string[], options: MeterOptions = {}): Promise<Measurement> {
  const machineBefore = machineBusyTicks()
  const selfBefore = process.cpuUsage()
  const serverBefore = options.postmasterPid ? cpuOfTree(readProcs(), options.postmasterPid) : new Map<number, number>()
  const started = performance.now()
  // detached: its own process group, so killCurrent() ends the command and its children together.
  const child = spawn(argv[0]!, argv.slice(1), { env: options.env, cwd: options.cwd, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  current = child
  const rootPid = child.pid!
  const lines: TimedLine[] = []
  const out = { stdout: '', stderr: '' }
  for (const stream of ['stdout', 'stderr'] as const) {
    let partial = ''
    child[stream]!.on('data', (chunk: Buffer) => {
      const at = (performance.now() - started) / 1000
      const text = chunk.toString('utf8')
      out[stream] += text
      const parts = (partial + text).split('\n')
      partial = parts.pop()!
      for (const line of parts) lines.push({ at, stream, text: line })
    })
    child[stream]!.on('end', () => partial && lines.push({ at: (performance.now() - started) / 1000, stream, text: partial }))
  }

  let peakRss = 0
  let peakPss = 0
  let rssAtPeak: { name: string; bytes: number }[] = []
  const rssSeries: { at: number; bytes: number }[] = []
  const cpuByPid = new Map<number, { name: string; ticks: number }>()
  let serverLast = new Map<number, number>(serverBefore)
  const sample = () => {
    const procs = readProcs()
    const tree = descendants(procs, rootPid)
    let rss = 0
    let pss = 0
    for (const p of tree) {
      rss += p.rssBytes
      pss += pssBytes(p.pid)
      cpuByPid.set(p.pid, { name: nameOf(p, rootPid), ticks: p.cpuTicks })
    }
    rssSeries.push({ at: (performance.now() - started) / 1000, bytes: rss })
    if (rss > peakRss) {
      peakRss = rss
      rssAtPeak = tree.map((p) => ({ name: nameOf(p, rootPid), bytes: p.rssBytes }))
    }
    peakPss = Math.max(peakPss, pss)
    if (options.postmasterPid) serverLast = new Map([...serverLast, ...cpuOfTree(procs, options.postmasterPid)])
  }
  const timer = setInterval(sample, SAMPLE_MS)
  sample()
  const exitCode = await new Promise<number>((resolve) => {
    child.on('error', () => resolve(127))
    child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : 1)))
  })
  const seconds = (performance.now() - started) / 1000
  clearInterval(timer)
  current = null

  const treeCpu: Record<string, number> = {}
  for (const { name, ticks } of cpuByPid.values()) treeCpu[name] = (treeCpu[name] ?? 0) + ticks / CLOCK_TICKS
  let serverTicks = 0
  for (const [pid, ticks] of serverLast) serverTicks += ticks - (serverBefore.get(pid) ?? 0)
  const serverCpuSeconds = serverTicks / CLOCK_TICKS
  const selfUsage = process.cpuUsage(selfBefore)
  const selfSeconds = (selfUsage.user + selfUsage.system) / 1e6
  const machineSeconds = (machineBusyTicks() - machineBefore) / CLOCK_TICKS
  const ours = Object.values(treeCpu).reduce((a, b) => a + b, 0) + serverCpuSeconds + selfSeconds
  return {
    label,
    exitCode,
    seconds,
    peakRssBytes: peakRss,
    peakPssBytes: peakPss,
    rssSeries,
    rssAtPeak,
    treeCpu,
    serverCpuSeconds,
    otherCpuSeconds: Math.max(0, machineSeconds - ours),
    lines,
    stdout: out.stdout,
    stderr: out.stderr,
  }
}

/** "node (tsx launcher)" for the root, "node", "pg_dump", "pigz", "psql", ... for the rest. */
function nameOf(p: Proc, rootPid: number): string {
  if (p.pid !== rootPid) return p.comm
  return p.comm === 'node' ? 'node (tsx launcher)' : p.comm
}

function readProcs(): Map<number, Proc> {
  const procs = new Map<number, Proc>()
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    let stat: string
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'latin1')
    } catch {
      continue // exited between readdir and read
    }
    // comm may contain spaces and parentheses: the fields start after the last ')'.
    const close = stat.lastIndexOf(')')
    const fields = stat.slice(close + 2).split(' ')
    const field = (n: number) => Number(fields[n - 3]) // proc(5) numbers fields from 1; fields[0] is field 3
    procs.set(Number(entry), {
      pid: Number(entry),
      ppid: field(4),
      comm: stat.slice(stat.indexOf('(') + 1, close),
      cpuTicks: field(14) + field(15),
      rssBytes: field(24) * PAGE_BYTES,
    })
  }
  return procs
}

function descendants(procs: Map<number, Proc>, rootPid: number): Proc[] {
  const children = new Map<number, Proc[]>()
  for (const p of procs.values()) {
    const siblings = children.get(p.ppid)
    if (siblings) siblings.push(p)
    else children.set(p.ppid, [p])
  }
  const root = procs.get(rootPid)
  const found: Proc[] = root ? [root] : []
  for (let i = 0; i < found.length; i++) found.push(...(children.get(found[i]!.pid) ?? []))
  return found
}

function cpuOfTree(procs: Map<number, Proc>, rootPid: number): Map<number, number> {
  return new Map(descendants(procs, rootPid).map((p) => [p.pid, p.cpuTicks]))
}

function pssBytes(pid: number): number {
  try {
    const match = /^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'latin1'))
    return match ? Number(match[1]) * 1024 : 0
  } catch {
    return 0
  }
}

/** All CPUs' non-idle time since boot, in clock ticks (the `cpu` line of /proc/stat). */
function machineBusyTicks(): number {
  const line = fs.readFileSync('/proc/stat', 'latin1').split('\n')[0]!
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number)
  return (user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)
}

function systemNumber(name: string, fallback: number): number {
  try {
    const value = Number(execFileSync('getconf', [name], { encoding: 'utf8' }).trim())
    return Number.isFinite(value) && value > 0 ? value : fallback
  } catch {
    return fallback
  }
}
