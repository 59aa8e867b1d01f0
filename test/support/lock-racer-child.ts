// One of many processes racing for the same lock (test/integration/lock-race.test.ts). Reads
// commands on stdin, one a line: `go <round>` tries once (no waiting) and answers `won <round>` or
// `lost <round>`; `release <round>` lets go of a lock it won and answers `released <round>`.
import readline from 'node:readline'
import { OpsError, messageOf } from '../../lib/core/errors.ts'
import { acquireLock, type Lock } from '../../lib/core/lock.ts'
import { configureLog } from '../../lib/core/log.ts'

configureLog({ file: null, stdoutIsData: true })
const [file = '', name = ''] = process.argv.slice(2)
let held: Lock | null = null

for await (const line of readline.createInterface({ input: process.stdin })) {
  const [verb, round] = line.split(' ')
  if (verb === 'go') {
    try {
      held = await acquireLock(file, { command: `racer ${name}`, waitMs: 0, staleAfterMs: 60_000 })
      process.stdout.write(`won ${round}\n`)
    } catch (error) {
      process.stdout.write(error instanceof OpsError && error.kind === 'locked' ? `lost ${round}\n` : `error ${round} ${messageOf(error)}\n`)
    }
  } else if (verb === 'release') {
    held?.release()
    held = null
    process.stdout.write(`released ${round}\n`)
  }
}
