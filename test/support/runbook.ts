import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from './scripts.ts'

// docs/runbook.md read as a test reads it: a section's numbered steps and the shell commands in
// each step's ```sh blocks, so an e2e test runs the page's own commands in the page's order and
// the page cannot drift from what works.
export const RUNBOOK = path.join(ROOT, 'docs', 'runbook.md')

export interface RunbookStep {
  number: number
  /** the step's prose with its code blocks */
  text: string
  /** each ```sh block's commands: continuation lines joined, blank lines dropped */
  blocks: string[][]
  /** every block's commands, in order */
  commands: string[]
}

export function runbookSteps(heading: string, markdown = fs.readFileSync(RUNBOOK, 'utf8')): RunbookStep[] {
  const start = markdown.indexOf(`\n## ${heading}\n`)
  if (start < 0) throw new Error(`docs/runbook.md has no section "## ${heading}"`)
  const body = markdown.slice(start + heading.length + 5)
  const section = body.slice(0, body.search(/^## /m) < 0 ? undefined : body.search(/^## /m))
  // A step starts at "N. " at the start of a line; its prose and blocks are indented under it.
  const parts = section.split(/^(?=\d+\. )/m).filter((p) => /^\d+\. /.test(p))
  return parts.map((text) => {
    const blocks = blocksIn(text)
    return { number: Number(/^(\d+)\./.exec(text)?.[1]), text, blocks, commands: blocks.flat() }
  })
}

function blocksIn(text: string): string[][] {
  return [...text.matchAll(/^( *)```sh\n([\s\S]*?)^\1```$/gm)].map((block) => {
    const indent = block[1]?.length ?? 0
    const joined = (block[2] ?? '').split('\n').map((l) => l.slice(indent)).join('\n').replace(/\\\n\s*/g, '')
    return joined.split('\n').map((l) => l.trim()).filter(Boolean)
  })
}
