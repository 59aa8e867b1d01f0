import fs from 'node:fs'
import { writeFileAtomic } from './atomic-file.ts'

// Reads the KEY=VALUE file docker compose also reads (`.env.production`): comments, blank lines,
// optional `export `, single or double quotes. Nothing is evaluated.
export function parseEnvFile(text: string): Record<string, string> {
  const vars: Record<string, string> = {}
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim()
    if (!line || line.startsWith('#')) continue
    const match = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line)
    if (!match) continue
    vars[match[1]!] = unquote(match[2]!)
  }
  return vars
}

function unquote(value: string): string {
  const quoted = /^(['"])(.*)\1$/.exec(value)
  if (quoted) return quoted[1] === '"' ? quoted[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"') : quoted[2]!
  return value.replace(/\s+#.*$/, '')
}

export function readEnvFile(file: string): Record<string, string> | null {
  try {
    return parseEnvFile(fs.readFileSync(file, 'utf8'))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw error
  }
}

/**
 * Sets one KEY=value line, keeping every other line and the file's mode. Deploy records the
 * running tag here, so a plain `docker compose up` or the boot unit starts the same version.
 */
export function setEnvValue(file: string, key: string, value: string): void {
  const text = fs.readFileSync(file, 'utf8')
  const line = new RegExp(`^(?:export\\s+)?${key}=.*$`, 'm')
  const next = line.test(text) ? text.replace(line, `${key}=${value}`) : `${text.replace(/\n?$/, '\n')}${key}=${value}\n`
  if (next !== text) writeFileAtomic(file, next, fs.statSync(file).mode & 0o777)
}
