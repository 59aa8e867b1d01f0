import path from 'node:path'
import type { ComposeProject } from './compose.ts'
import { capture, type Command } from '../core/runner.ts'

// Containers are found by the labels both Compose v1 and v2 set: their names differ
// (proj_bot_1 / proj-bot-1) and `ps --format json` exists only in v2. One-off `run` containers
// (migrations) are not the service.
export function listContainersCommand(p: ComposeProject, service: string): Command {
  return {
    argv: ['docker', 'ps', '--all', '--quiet', '--filter', `label=com.docker.compose.project=${p.project}`, '--filter', `label=com.docker.compose.service=${service}`, '--filter', 'label=com.docker.compose.oneoff=False'],
    mutates: false,
    timeoutMs: 30_000,
  }
}

export function inspectStateCommand(ids: string[]): Command {
  return {
    argv: ['docker', 'inspect', '--format', '{{.Id}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.RestartCount}} {{.State.ExitCode}}', ...ids],
    mutates: false,
    timeoutMs: 30_000,
  }
}

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
  const ids = (await capture(listContainersCommand(p, service))).split('\n').filter(Boolean)
  return ids.length === 0 ? [] : inspectContainers(ids)
}

export async function inspectContainers(ids: string[]): Promise<ContainerInfo[]> {
  return (await capture(inspectStateCommand(ids)))
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id = '', status = '', health = 'none', restarts = '0', exitCode = '0'] = line.trim().split(' ')
      return { id, status, health: health as ContainerInfo['health'], restarts: Number(restarts), exitCode: Number(exitCode) }
    })
}

/** `docker exec` into the container found by labels: the same with Compose v1 and v2, and faster. */
export function execInContainer(id: string, argv: string[], timeoutMs: number): Command {
  return { argv: ['docker', 'exec', '-i', id, ...argv], timeoutMs, mutates: false }
}

/** The image a container was created from (`registry/bot:v1.2.0`). */
export function containerImage(id: string): Command {
  return { argv: ['docker', 'inspect', '--format', '{{.Config.Image}}', id], mutates: false, timeoutMs: 30_000 }
}

/**
 * `NAME=value` when the container was created with NAME in its environment, else nothing. One
 * variable, not the whole environment: that holds the bot's secrets.
 */
export function containerEnvEntry(id: string, name: string): Command {
  return { argv: ['docker', 'inspect', '--format', `{{range .Config.Env}}{{if eq (index (split . "=") 0) "${name}"}}{{println .}}{{end}}{{end}}`, id], mutates: false, timeoutMs: 30_000 }
}

/** Asks the registry, without pulling: is the image there? (--insecure: a plain-HTTP registry too) */
export function manifestInspect(image: string): Command {
  return { argv: ['docker', 'manifest', 'inspect', '--insecure', image], mutates: false, timeoutMs: 60_000 }
}

export function dockerInfo(): Command {
  return { argv: ['docker', 'info', '--format', '{{.ServerVersion}}'], mutates: false, timeoutMs: 30_000 }
}

/** `docker stop` of one container: `graceSeconds` to finish what it holds before SIGKILL. */
export function stopContainer(id: string, graceSeconds: number): Command {
  return { argv: ['docker', 'stop', '--time', String(graceSeconds), id], timeoutMs: (graceSeconds + 60) * 1000 }
}

export function removeContainer(id: string): Command {
  return { argv: ['docker', 'rm', '--force', id], timeoutMs: 60_000 }
}

/** The container's name (`proj-bot-2`), which Docker's DNS resolves on the project's network. */
export function containerName(id: string): Command {
  return { argv: ['docker', 'inspect', '--format', '{{.Name}}', id], mutates: false, timeoutMs: 30_000 }
}

/** A shell script run inside a container (`sh`, which every nginx image has), with `input` on stdin. */
export function shellInContainer(id: string, script: string, timeoutMs: number, input?: string, mutates = true): Command {
  return { argv: ['docker', 'exec', '-i', id, 'sh', '-c', script], timeoutMs, mutates, ...(input === undefined ? {} : { input }) }
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

/** One sample of each container's memory use: `<full id> 12.5MiB / 512MiB` a line. */
export function containerStatsCommand(ids: string[]): Command {
  return { argv: ['docker', 'stats', '--no-stream', '--no-trunc', '--format', '{{.ID}} {{.MemUsage}}', ...ids], mutates: false, timeoutMs: 30_000 }
}

/** A local image's build time and size in bytes: `2026-12-01T10:00:00.123Z 123456789`. */
export function imageCreatedAndSize(image: string): Command {
  return { argv: ['docker', 'image', 'inspect', '--format', '{{.Created}} {{.Size}}', image], mutates: false, timeoutMs: 30_000 }
}

export function imageRepoDigests(image: string): Command {
  return { argv: ['docker', 'image', 'inspect', '--format', '{{range .RepoDigests}}{{println .}}{{end}}', image], mutates: false, timeoutMs: 30_000 }
}

/** A file of a container, as a tar stream on stdout (small files only: the runner keeps it in memory). */
export function copyFromContainer(id: string, file: string): Command {
  return { argv: ['docker', 'cp', `${id}:${file}`, '-'], mutates: false, timeoutMs: 30_000 }
}

// What a deploy prunes (lib/release/prune.ts).
export function listReleaseImages(repository: string): Command {
  return { argv: ['docker', 'image', 'ls', '--format', '{{.Tag}}\t{{.CreatedAt}}', repository], mutates: false, timeoutMs: 60_000 }
}

/** By name, without --force: an image a container still uses stays, and a shared ID is only untagged. */
export function removeImage(image: string): Command {
  return { argv: ['docker', 'image', 'rm', image], timeoutMs: 2 * 60_000 }
}

/** This project's one-off containers (`compose run`) that are not running. */
export function listStoppedOneOffs(p: ComposeProject): Command {
  return {
    argv: ['docker', 'ps', '--all', '--quiet', '--filter', `label=com.docker.compose.project=${p.project}`, '--filter', 'label=com.docker.compose.oneoff=True', '--filter', 'status=exited', '--filter', 'status=created', '--filter', 'status=dead'],
    mutates: false,
    timeoutMs: 30_000,
  }
}

export function removeContainers(ids: string[]): Command {
  return { argv: ['docker', 'rm', ...ids], timeoutMs: 2 * 60_000 }
}

/** Untagged images nothing uses (a tag pulled again leaves its old image dangling). */
export function pruneDanglingImages(): Command {
  return { argv: ['docker', 'image', 'prune', '--force'], timeoutMs: 10 * 60_000 }
}

export function systemDf(): Command {
  return { argv: ['docker', 'system', 'df', '--format', '{{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}'], mutates: false, timeoutMs: 30_000 }
}

/** mkdir, chown to the image's postgres user, chmod 700; prints uid:gid. The path is an argument, never shell text. */
export function repoDirCommand(image: string, dir: string): Command {
  const script = 'owner="$(id -u postgres):$(id -g postgres)" && mkdir -p "$1" && chown "$owner" "$1" && chmod 700 "$1" && echo "$owner"'
  const inside = path.posix.join('/repo-parent', path.basename(dir))
  return { argv: ['docker', 'run', '--rm', '--user', '0', '--entrypoint', 'sh', '--volume', `${path.dirname(dir)}:/repo-parent`, image, '-c', script, 'sh', inside], timeoutMs: 2 * 60_000 }
}
