import type { ComposeProject } from './compose.ts'
import type { Command } from '../core/runner.ts'
import { $read } from '../core/shell.ts'

// Containers are found by the labels both Compose v1 and v2 set: their names differ
// (proj_bot_1 / proj-bot-1) and `ps --format json` exists only in v2. One-off `run` containers
// (migrations) are not the service.
export interface ContainerInfo {
  id: string
  status: string
  health: 'healthy' | 'unhealthy' | 'starting' | 'none'
  restarts: number
  exitCode: number
}

/** The service's container, the running one first; null when it has none (not deployed). */
export async function findContainer(p: ComposeProject, service: string): Promise<ContainerInfo | null> {
  const all = await serviceContainers(p, service)
  return all.find((c) => c.status === 'running') ?? all[0] ?? null
}

/** Every container of the service, running or not (two while a blue-green switch runs). */
export async function serviceContainers(p: ComposeProject, service: string): Promise<ContainerInfo[]> {
  const [project, named] = [`label=com.docker.compose.project=${p.project}`, `label=com.docker.compose.service=${service}`]
  const listed = await $read({ timeoutMs: 30_000 })`docker ps --all --quiet --filter ${project} --filter ${named} --filter label=com.docker.compose.oneoff=False`
  const ids = listed.stdout.split('\n').filter(Boolean)
  return ids.length === 0 ? [] : inspectContainers(ids)
}

export async function inspectContainers(ids: string[]): Promise<ContainerInfo[]> {
  const format = '{{.Id}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.RestartCount}} {{.State.ExitCode}}'
  return (await $read({ timeoutMs: 30_000 })`docker inspect --format ${format} ${ids}`).stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id = '', status = '', health = 'none', restarts = '0', exitCode = '0'] = line.trim().split(' ')
      return { id, status, health: health as ContainerInfo['health'], restarts: Number(restarts), exitCode: Number(exitCode) }
    })
}

export function dockerInfo(): Command {
  return { argv: ['docker', 'info', '--format', '{{.ServerVersion}}'], mutates: false, timeoutMs: 30_000 }
}

