import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { DB, exec, type Stack } from './stack.ts'

// A live writer, as a busy bot writes: one order every `intervalMs`, each in its own transaction,
// through a psql session in the postgres container. An id counts as committed only once the
// server has answered its INSERT ... RETURNING; a session ended by a swap is opened again, as a
// bot reconnects. What it has been told is committed must be found afterwards somewhere.
export const WRITER_TABLE = 'e2e_orders'
const CREATE_TABLE = `CREATE TABLE IF NOT EXISTS ${WRITER_TABLE} (id bigint PRIMARY KEY, note text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`

export class Writer {
  readonly committed: number[] = []
  private next: number
  private running = false
  private session: ChildProcessWithoutNullStreams | null = null
  private loop: Promise<void> = Promise.resolve()

  /**
   * `stack`: only its compose project is used (a droplet's stack has one too); `firstId`: a second
   * writer after a first one continues its numbering
   */
  constructor(private readonly stack: Pick<Stack, 'project'>, private readonly intervalMs = 100, firstId = 1) {
    this.next = firstId
  }

  start(): void {
    this.running = true
    this.loop = this.run()
  }

  async stop(): Promise<number[]> {
    this.running = false
    await this.loop
    this.session?.stdin.end()
    await new Promise((r) => setTimeout(r, 500))
    this.session?.kill()
    return this.committed
  }

  private async run(): Promise<void> {
    while (this.running) {
      if (!this.session || this.session.exitCode !== null) this.session = await this.open()
      const id = this.next++
      // A restore of a backup older than the table takes it away; the bot's own schema would come
      // back with its version, this writer's comes back with its next order.
      this.session?.stdin.write(`${CREATE_TABLE}; INSERT INTO ${WRITER_TABLE} (id, note) VALUES (${id}, 'order ${id}') RETURNING id;\n`)
      await new Promise((r) => setTimeout(r, this.intervalMs))
    }
  }

  private async open(): Promise<ChildProcessWithoutNullStreams | null> {
    const ids = await exec(['docker', 'ps', '-q', '--filter', `label=com.docker.compose.project=${this.stack.project}`, '--filter', 'label=com.docker.compose.service=postgres'])
    const container = ids.stdout.trim().split('\n')[0]
    if (!container) return null
    const child = spawn('docker', ['exec', '-i', container, 'psql', '-X', '-At', '-q', '-U', DB.user, '-d', DB.name], { stdio: ['pipe', 'pipe', 'pipe'] })
    let pending = ''
    child.stdout.on('data', (chunk: Buffer) => {
      pending += chunk.toString()
      const lines = pending.split('\n')
      pending = lines.pop() ?? ''
      for (const line of lines) if (/^\d+$/.test(line.trim())) this.committed.push(Number(line.trim()))
    })
    child.stderr.resume()
    child.stdin.on('error', () => undefined)
    return child
  }
}

/** The export directories a script's log names ("Exported N rows ... to DIR (...)"). */
export function exportDirsIn(logText: string): string[] {
  return [...logText.matchAll(/Exported \d+ rows that backup \S+ does not hold to (\S+) \(/g)].map((m) => m[1] ?? '')
}

/** Ids found in the writer table's CSV of each export directory. */
export function exportedIds(dirs: string[]): Set<number> {
  const ids = new Set<number>()
  for (const dir of dirs) {
    const file = path.join(dir, `public.${WRITER_TABLE}.csv`)
    if (!fs.existsSync(file)) continue
    for (const line of fs.readFileSync(file, 'utf8').split('\n').slice(1)) {
      const id = Number(line.split(',')[0])
      if (line && Number.isFinite(id)) ids.add(id)
    }
  }
  return ids
}

/** The committed ids found neither in the database nor in any export: what a failure lost. */
export async function unaccounted(stack: Stack, committed: number[], exportDirs: string[]): Promise<{ lost: number[]; onlyExported: number }> {
  const inDb = new Set((await stack.psql(`SELECT id FROM ${WRITER_TABLE}`).catch(() => '')).split('\n').filter(Boolean).map(Number))
  const exported = exportedIds(exportDirs)
  return {
    lost: committed.filter((id) => !inDb.has(id) && !exported.has(id)),
    onlyExported: committed.filter((id) => !inDb.has(id) && exported.has(id)).length,
  }
}
