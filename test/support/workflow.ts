import fs from 'node:fs'
import path from 'node:path'
import { ROOT, type ScriptResult } from './scripts.ts'

// The deploy workflow's steps as GitHub would run them, read from .github/workflows/deploy.yml
// itself, so a test runs the scripts the workflow holds and never a copy of them. Only what the
// workflow uses is understood (named steps of one job with `env:`, `run:` and `if: always()`;
// `${{ inputs.x }}`, `${{ secrets.x }}`, `${{ vars.x || 'default' }}`); anything else throws, so a
// workflow that grows beyond it fails the test instead of being run differently from GitHub.
export const DEPLOY_WORKFLOW = path.join(ROOT, '.github', 'workflows', 'deploy.yml')

export interface WorkflowStep {
  name: string
  /** null: GitHub's default, success() */
  if: string | null
  /** values as written, expressions unevaluated */
  env: Record<string, string>
  run: string
}

export interface WorkflowContext {
  inputs: Record<string, string>
  secrets: Record<string, string>
  vars: Record<string, string>
}

export interface StepOutcome {
  name: string
  /** null: skipped (an earlier step failed) */
  result: ScriptResult | null
}

export interface JobOutcome {
  /** the exit code of the step that failed the job, 0 when none did */
  code: number
  steps: StepOutcome[]
}

/**
 * What a runner does with a `run:` script when the workflow names no shell: GitHub's default on
 * Linux is `bash -e {0}` ({0}: the script written to a file).
 */
export const DEFAULT_SHELL = ['bash', '-e']

/** Runs one step's script: `env` is exactly what the runner gives the step's shell. */
export type StepShell = (script: string, env: Record<string, string>) => Promise<ScriptResult>

export function readWorkflowSteps(text = fs.readFileSync(DEPLOY_WORKFLOW, 'utf8')): WorkflowStep[] {
  const lines = text.split('\n')
  const start = lines.findIndex((l) => /^\s*steps:\s*$/.test(l))
  if (start < 0) throw new Error('deploy.yml: no steps:')
  const itemIndent = lines.slice(start + 1).find((l) => l.trim() !== '')?.search(/\S/) ?? -1
  const steps: WorkflowStep[] = []
  let i = start + 1
  while (i < lines.length) {
    const line = lines[i] ?? ''
    if (line.trim() === '' || line.trimStart().startsWith('#')) {
      i++
      continue
    }
    const indent = line.search(/\S/)
    if (indent < itemIndent) break
    if (indent !== itemIndent || !line.slice(indent).startsWith('- ')) throw new Error(`deploy.yml line ${i + 1}: expected a step ("- ...") at column ${itemIndent}: ${line}`)
    // The item's keys sit two columns in from its dash; the first one shares the dash's line.
    const keyIndent = itemIndent + 2
    const body = [' '.repeat(keyIndent) + line.slice(keyIndent)]
    i++
    while (i < lines.length) {
      const next = lines[i] ?? ''
      if (next.trim() !== '' && next.search(/\S/) <= itemIndent) break
      body.push(next)
      i++
    }
    steps.push(parseStep(body, keyIndent))
  }
  return steps
}

function parseStep(body: string[], keyIndent: number): WorkflowStep {
  const step: Partial<WorkflowStep> & { env: Record<string, string> } = { env: {} }
  for (let j = 0; j < body.length; j++) {
    const line = body[j] ?? ''
    if (line.trim() === '') continue
    if (line.search(/\S/) !== keyIndent) throw new Error(`deploy.yml: unexpected indentation in a step: ${line}`)
    const m = /^\s*([\w-]+):\s?(.*)$/.exec(line)
    if (!m) throw new Error(`deploy.yml: not a key in a step: ${line}`)
    const [, key = '', rest = ''] = m
    const nested: string[] = []
    while (j + 1 < body.length && ((body[j + 1] ?? '').trim() === '' || (body[j + 1] ?? '').search(/\S/) > keyIndent)) nested.push(body[++j] ?? '')
    if (key === 'name') step.name = scalar(rest)
    else if (key === 'if') step.if = scalar(rest)
    else if (key === 'env') {
      for (const entry of nested.filter((l) => l.trim() !== '')) {
        const kv = /^\s*([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$/.exec(entry)
        if (!kv) throw new Error(`deploy.yml: not an env entry: ${entry}`)
        step.env[kv[1] ?? ''] = scalar(kv[2] ?? '')
      }
    } else if (key === 'run') step.run = rest.trim() === '|' ? blockScalar(nested) : scalar(rest)
    else throw new Error(`deploy.yml: step key "${key}" is not understood by test/support/workflow.ts`)
  }
  if (!step.name || step.run === undefined) throw new Error(`deploy.yml: a step without a name or a run: ${body.join('\n')}`)
  return { name: step.name, if: step.if ?? null, env: step.env, run: step.run }
}

/** A `|` block: dedented by its first line's indentation, one final newline (clip chomping). */
function blockScalar(lines: string[]): string {
  const indent = lines.find((l) => l.trim() !== '')?.search(/\S/) ?? 0
  return lines.map((l) => (l.trim() === '' ? '' : l.slice(indent))).join('\n').replace(/\n*$/, '\n')
}

function scalar(raw: string): string {
  const v = raw.trim()
  if (/^'.*'$/.test(v)) return v.slice(1, -1).replace(/''/g, "'")
  if (/^".*"$/.test(v)) return JSON.parse(v) as string
  return v
}

/** `${{ ... }}` in a value, with the few expression forms the workflow uses; unset names are ''. */
export function evaluate(value: string, context: WorkflowContext): string {
  return value.replace(/\$\{\{\s*(.*?)\s*\}\}/g, (_, expr: string) => {
    const m = /^(inputs|secrets|vars)\.([A-Za-z_][A-Za-z0-9_]*)(?:\s*\|\|\s*'([^']*)')?$/.exec(expr)
    if (!m) throw new Error(`deploy.yml: the expression \${{ ${expr} }} is not understood by test/support/workflow.ts`)
    const [, scope = 'inputs', name = '', fallback] = m
    const found = context[scope as keyof WorkflowContext][name] ?? ''
    return found === '' && fallback !== undefined ? fallback : found
  })
}

/**
 * The named steps, in the workflow's order, as a job runs them: each in its own shell with its
 * evaluated env over `base` (HOME, GITHUB_STEP_SUMMARY, ...); after a failure only `if: always()`
 * steps run, and the job ends with the failed step's exit code.
 */
export async function runJob(steps: WorkflowStep[], names: string[], context: WorkflowContext, base: Record<string, string>, shell: StepShell): Promise<JobOutcome> {
  const chosen = names.map((name) => {
    const step = steps.find((s) => s.name === name)
    if (!step) throw new Error(`deploy.yml has no step "${name}" (it has: ${steps.map((s) => s.name).join(', ')})`)
    return step
  })
  const ordered = steps.filter((s) => chosen.includes(s))
  if (ordered.map((s) => s.name).join('\n') !== chosen.map((s) => s.name).join('\n')) throw new Error(`steps named out of the workflow's order: ${names.join(', ')}`)
  let code = 0
  const outcomes: StepOutcome[] = []
  for (const step of ordered) {
    if (step.if !== null && step.if !== 'always()') throw new Error(`deploy.yml: the condition "if: ${step.if}" is not understood by test/support/workflow.ts`)
    if (code !== 0 && step.if !== 'always()') {
      outcomes.push({ name: step.name, result: null })
      continue
    }
    const env = { ...base, ...Object.fromEntries(Object.entries(step.env).map(([k, v]) => [k, evaluate(v, context)])) }
    const result = await shell(step.run, env)
    outcomes.push({ name: step.name, result })
    if (result.code !== 0 && code === 0) code = result.code
  }
  return { code, steps: outcomes }
}
