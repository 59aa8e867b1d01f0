import { createInterface } from 'node:readline/promises'
import { OpsError } from './errors.ts'
import { isDryRun } from './runner.ts'

// With no terminal, a prompt would wait forever (zx's question() exits 13 silently): a destructive
// step then needs --yes, and says so.
export async function confirmDestructive(question: string, assumeYes: boolean): Promise<void> {
  if (assumeYes || isDryRun()) return
  if (!process.stdin.isTTY) {
    throw new OpsError('refused', 'Refusing to continue without confirmation: there is no terminal to ask on. Re-run with --yes to confirm; nothing was changed')
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr })
  try {
    const answer = (await rl.question(`${question} Type "yes" to continue: `)).trim().toLowerCase()
    if (answer !== 'yes' && answer !== 'y') throw new OpsError('refused', 'Cancelled by the operator; nothing was changed')
  } finally {
    rl.close()
  }
}
