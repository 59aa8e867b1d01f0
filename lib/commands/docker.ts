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

/** A label of a local image; exit non-zero when the image is not here. */
export function imageLabel(image: string, label: string): Command {
  return { argv: ['docker', 'image', 'inspect', '--format', `{{index .Config.Labels "${label}"}}`, image], mutates: false, timeoutMs: 30_000 }
}

/** `docker build` of a local context, labelled so the next run can tell whether it is current. */
export function buildImage(image: string, context: string, buildArgs: Record<string, string>, labels: Record<string, string>): Command {
  const args = Object.entries(buildArgs).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`])
  const labelFlags = Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`])
  return { argv: ['docker', 'build', '--quiet', ...args, ...labelFlags, '--tag', image, context], timeoutMs: 20 * 60_000 }
}

export function createVolume(name: string, labels: Record<string, string> = {}): Command {
  return { argv: ['docker', 'volume', 'create', ...Object.entries(labels).flatMap(([k, v]) => ['--label', `${k}=${v}`]), name], timeoutMs: 60_000 }
}

export function removeVolume(name: string): Command {
  return { argv: ['docker', 'volume', 'rm', '--force', name], timeoutMs: 60_000 }
}

/** The last lines a container wrote (the reason a server stopped). */
export function containerLogs(id: string, lines: number): Command {
  return { argv: ['docker', 'logs', '--tail', String(lines), id], mutates: false, timeoutMs: 30_000 }
}

