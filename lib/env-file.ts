import fs from 'node:fs'

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
