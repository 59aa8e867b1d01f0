import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import readline from 'node:readline'
import { afterAll, expect, it } from 'vitest'
import { ROOT, tempDir } from '../support/scripts.ts'

// Many processes find the same stale lock (its holder's process is gone) at the same moment: each
// round exactly one of them holds it, and the lock file names that one.
const RACERS = 20
const ROUNDS = 20
const children: ChildProcessWithoutNullStreams[] = []
afterAll(() => children.forEach((child) => child.kill()))

it(`${RACERS} processes racing for one stale lock, ${ROUNDS} rounds: exactly one holder each round`, async () => {
  const file = path.join(tempDir('ttg-lock-race-'), '.deploy.lock')
  const answers: string[][] = []
  for (let i = 0; i < RACERS; i++) {
    const child = spawn(path.join(ROOT, 'node_modules/.bin/tsx'), [path.join(ROOT, 'test/support/lock-racer-child.ts'), file, String(i)], { cwd: ROOT })
    children.push(child)
    const lines: string[] = []
    answers.push(lines)
    readline.createInterface({ input: child.stdout }).on('line', (line) => lines.push(line))
  }
  const everyoneSaid = async (text: string, who = children.map((_, i) => i)) => {
    const deadline = Date.now() + 60_000
    while (!who.every((i) => answers[i]!.some((line) => line.startsWith(text)))) {
      if (Date.now() > deadline) throw new Error(`no "${text}" from every racer: ${JSON.stringify(answers.map((a) => a.at(-1)))}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
  const tell = (line: string) => children.forEach((child) => child.stdin.write(`${line}\n`))
  // Warm up: every racer has started and loaded the lock code before the first race.
  tell('release 0')
  await everyoneSaid('released 0')
  for (let round = 1; round <= ROUNDS; round++) {
    const stale = { pid: 2 ** 22 + 1000 + round, host: os.hostname(), command: `deploy crashed in round ${round}`, started_at: new Date().toISOString() }
    fs.writeFileSync(file, JSON.stringify(stale) + '\n')
    tell(`go ${round}`)
    await waitAllAnswered(round)
    const said = answers.map((lines) => lines.find((line) => line.endsWith(` ${round}`) && !line.startsWith('released')) ?? '')
    expect(said.filter((line) => line.startsWith('error')), `round ${round}`).toEqual([])
    const winners = said.flatMap((line, i) => (line.startsWith('won') ? [i] : []))
    expect(winners, `round ${round}: ${said.join(', ')}`).toHaveLength(1)
    expect(JSON.parse(fs.readFileSync(file, 'utf8')).command).toBe(`racer ${winners[0]}`)
    tell(`release ${round}`)
    await everyoneSaid(`released ${round}`)
    expect(fs.readdirSync(path.dirname(file)), `round ${round}: the lock is released and no claim or temp file is left`).toEqual([])
  }

  async function waitAllAnswered(round: number): Promise<void> {
    const deadline = Date.now() + 60_000
    while (!answers.every((lines) => lines.some((line) => line.endsWith(` ${round}`) && /^(won|lost|error)/.test(line)))) {
      if (Date.now() > deadline) throw new Error(`round ${round}: not every racer answered`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
})
