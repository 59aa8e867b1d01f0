import { findContainer } from '../commands/docker.ts'
import type { Context } from '../stack/context.ts'
import { $read } from '../core/shell.ts'
import type { HealthReport, Service } from '../stack/health.ts'

// The Service Instance's restart_count and memory_usage_mb beside each service's health in
// `health-check --json`: Docker's restart count (a deploy recreates the container, so it counts
// restarts since the last deployment) and one `docker stats` sample. Null where Docker cannot say
// (no container, a managed database, Docker not answering): a health report never fails for them.

export interface Resources {
  restart_count: number | null
  memory_usage_mb: number | null
}

const UNITS: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KIB: 1024, MIB: 1024 ** 2, GIB: 1024 ** 3 }

/** `12.5MiB / 512MiB` (docker stats' MemUsage) in whole MB of 1024 * 1024 bytes, as size_mb counts them. */
export function parseMemUsage(usage: string): number | null {
  const m = /^\s*([\d.]+)\s*([KMG]?i?B)\b/i.exec(usage)
  const unit = m?.[2] ? UNITS[m[2].toUpperCase()] : undefined
  if (!m?.[1] || unit === undefined) return null
  const bytes = Number(m[1]) * unit
  return Number.isFinite(bytes) ? Math.round(bytes / 1024 ** 2) : null
}

/** `<id> <MemUsage>` lines, by container id. */
export function parseStats(output: string): Map<string, number | null> {
  const byId = new Map<string, number | null>()
  for (const line of output.split('\n')) {
    const [id, ...usage] = line.trim().split(' ')
    if (id) byId.set(id, parseMemUsage(usage.join(' ')))
  }
  return byId
}

export async function addResources(ctx: Context, report: HealthReport): Promise<void> {
  const services = Object.keys(report.services) as Service[]
  const containers = new Map<Service, { id: string; restarts: number; running: boolean }>()
  for (const service of services) {
    if (!ctx.compose || (service === 'postgres' && ctx.db.mode === 'url')) continue
    const found = await findContainer(ctx.compose, service).catch(() => null)
    if (found) containers.set(service, { id: found.id, restarts: found.restarts, running: found.status === 'running' })
  }
  const running = [...containers.values()].filter((c) => c.running).map((c) => c.id)
  const stats = running.length ? await $read({ nothrow: true, timeoutMs: 30_000 })`docker stats --no-stream --no-trunc --format '{{.ID}} {{.MemUsage}}' ${running}`.catch(() => null) : null
  const memory = stats?.exitCode === 0 ? parseStats(stats.stdout) : new Map<string, number | null>()
  for (const service of services) {
    const health = report.services[service]
    const c = containers.get(service)
    if (health) report.services[service] = { ...health, restart_count: c?.restarts ?? null, memory_usage_mb: (c && memory.get(c.id)) ?? null }
  }
}
