import { parseArgs } from 'node:util'
import { OpsError } from './errors.ts'

// node:util parseArgs in strict mode: a mistyped flag is an error, never silently ignored
// (zx's minimist argv would accept `--dryrun` and run for real).
export interface OptionSpec {
  type: 'boolean' | 'string'
  short?: string
  value?: string
  /** `--wait` alone or `--wait 30`: the value is taken only when the next word is a number */
  optionalNumber?: boolean
  description: string
}

export interface CliSpec {
  name: string
  summary: string
  usage: string
  positionals: { name: string; description: string }[]
  maxPositionals: number
  options: Record<string, OptionSpec>
  exitCodes: [number, string][]
  env?: [string, string][]
  examples: string[]
  notes?: string[]
}

const COMMON = {
  help: { type: 'boolean', short: 'h', description: 'Show this help and exit' },
  verbose: { type: 'boolean', short: 'v', description: 'Also print every command run (always in the log file)' },
} as const satisfies Record<string, OptionSpec>

/**
 * The option names a script declared (plus --help and --verbose): with its spec written
 * `satisfies CliSpec`, asking for a mistyped flag name fails to compile.
 */
export type OptionName<S extends CliSpec> = Extract<keyof S['options'] | keyof typeof COMMON, string>

export interface ParsedCli<S extends CliSpec = CliSpec> {
  spec: S
  help: boolean
  values: Partial<Record<OptionName<S>, string | boolean>>
  positionals: string[]
}

/** A leading `--` (scripts/run.sh's) keeps node from taking the script's options (--env-file) as its own. */
export function withoutSeparator(args: string[]): string[] {
  return args[0] === '--' ? args.slice(1) : args
}

export function parseCli<S extends CliSpec>(spec: S, argv: string[]): ParsedCli<S> {
  const options: Record<string, OptionSpec> = { ...spec.options, ...COMMON }
  let parsed
  try {
    parsed = parseArgs({
      args: withOptionalNumbers(withoutSeparator(argv), spec),
      strict: true,
      allowPositionals: true,
      options: Object.fromEntries(Object.entries(options).map(([k, o]) => [k, o.short ? { type: o.type, short: o.short } : { type: o.type }])),
    })
  } catch (error) {
    throw new OpsError('usage', (error as Error).message.split('\n')[0]!.replace(/\. To specify a positional.*$/, ''))
  }
  // parseArgs was given exactly the spec's options (strict), so these are the only keys it returns.
  const values = parsed.values as ParsedCli<S>['values']
  if (parsed.values.help) return { spec, help: true, values, positionals: parsed.positionals }
  if (parsed.positionals.length > spec.maxPositionals) {
    throw new OpsError('usage', `Unexpected argument: ${parsed.positionals[spec.maxPositionals]}`)
  }
  return { spec, help: false, values, positionals: parsed.positionals }
}

function withOptionalNumbers(argv: string[], spec: CliSpec): string[] {
  const optional = Object.entries(spec.options).filter(([, o]) => o.optionalNumber).map(([name]) => `--${name}`)
  return argv.flatMap((arg, i) => {
    if (!optional.includes(arg)) return [arg]
    return /^\d+$/.test(argv[i + 1] ?? '') ? [arg] : [`${arg}=`]
  })
}

export function helpText(spec: CliSpec): string {
  const options: Record<string, OptionSpec> = { ...spec.options, ...COMMON }
  const pad = (s: string, n: number) => s.padEnd(n)
  const optionLines = Object.entries(options).map(([name, o]) => {
    const flag = `${o.short ? `-${o.short}, ` : '    '}--${name}${o.type === 'string' ? (o.optionalNumber ? ` [${o.value ?? 'N'}]` : ` ${o.value ?? 'VALUE'}`) : ''}`
    return `  ${pad(flag, 30)} ${o.description}`
  })
  const sections = [
    `${spec.name}: ${spec.summary}`,
    `Usage: ${spec.usage}`,
    spec.positionals.length ? ['Arguments:', ...spec.positionals.map((p) => `  ${pad(p.name, 30)} ${p.description}`)].join('\n') : '',
    ['Options:', ...optionLines].join('\n'),
    ['Exit codes:', ...spec.exitCodes.map(([code, meaning]) => `  ${code}  ${meaning}`)].join('\n'),
    spec.env?.length ? ['Environment:', ...spec.env.map(([k, v]) => `  ${pad(k, 30)} ${v}`)].join('\n') : '',
    spec.notes?.length ? spec.notes.join('\n') : '',
    ['Examples:', ...spec.examples.map((e) => `  ${e}`)].join('\n'),
  ]
  return sections.filter(Boolean).join('\n\n') + '\n'
}

export function usageLine(spec: CliSpec): string {
  return `Usage: ${spec.usage}\nRun with --help for options, exit codes and examples.`
}

export function stringOption<S extends CliSpec>(cli: ParsedCli<S>, name: OptionName<S>): string | undefined {
  const value = cli.values[name]
  return typeof value === 'string' ? value : undefined
}

export function flag<S extends CliSpec>(cli: ParsedCli<S>, name: OptionName<S>): boolean {
  return cli.values[name] === true
}
