import { setTimeout as sleep } from 'node:timers/promises'
import type { ComposeProject } from './compose.ts'
import { capture, type Command } from './runner.ts'

// Containers are found by the labels both Compose v1 and v2 set: their names differ
// (proj_bot_1 / proj-bot-1) and `ps --format json` exists only in v2.
export function listContainersCommand(p: ComposeProject, service: string): Command {
  return {
    argv: ['docker', 'ps', '--all', '--quiet', '--filter', `label=com.docker.compose.project=${p.project}`, '--filter', `label=com.docker.compose.service=${service}`, '--filter', 'label=com.docker.compose.oneoff=False'],
    mutates: false,
    timeoutMs: 30_000,
  }
}

export function inspectStateCommand(ids: string[]): Command {
  return {
    argv: ['docker', 'inspect', '--format', '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}', ...ids],
    mutates: false,
    timeoutMs: 30_000,
  }
}

export type ContainerState = { running: boolean; health: 'healthy' | 'unhealthy' | 'starting' | 'none' } | null

export async function serviceState(p: ComposeProject, service: string): Promise<ContainerState> {
  const ids = (await capture(listContainersCommand(p, service))).split('\n').filter(Boolean)
  if (ids.length === 0) return null
  const states = (await capture(inspectStateCommand(ids))).split('\n').map((l) => l.trim().split(' '))
  const running = states.find(([status]) => status === 'running')
  if (!running) return { running: false, health: 'none' }
  return { running: true, health: (running[1] as 'healthy' | 'unhealthy' | 'starting' | 'none') ?? 'none' }
}

/** Waits until every service runs and, where it has a healthcheck, reports healthy. */
export async function waitForServices(p: ComposeProject, services: string[], timeoutMs: number): Promise<string | null> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const waiting: string[] = []
    for (const service of services) {
      const state = await serviceState(p, service)
      if (!state?.running || (state.health !== 'healthy' && state.health !== 'none')) waiting.push(`${service}: ${state ? (state.running ? state.health : 'stopped') : 'no container'}`)
    }
    if (waiting.length === 0) return null
    if (Date.now() >= deadline) return waiting.join(', ')
    await sleep(2000)
  }
}
