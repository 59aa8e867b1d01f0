import fs from 'node:fs'
import { parseEnvFile } from './env-file.ts'

// The data model's Deployment Configuration rules, checked before every deploy (and by
// setup-droplet for each answer): a deploy never starts on a half-filled or world-readable file.
export const RULES: Record<string, { test: (v: string) => boolean; message: string }> = {
  TELEGRAM_BOT_TOKEN: { test: (v) => /^\d+:[A-Za-z0-9_-]+$/.test(v), message: 'must look like 123456789:ABC-def_ghi' },
  TELEGRAM_WEBHOOK_URL: { test: (v) => v === '' || /^https:\/\/[^\s/]+/.test(v), message: 'must be empty (polling) or an https:// URL' },
  DATABASE_URL: { test: (v) => /^postgres(ql)?:\/\/[^\s:@/]+(:[^\s@/]*)?@[^\s/]+\/[A-Za-z_][A-Za-z0-9_]*(\?\S*)?$/.test(v), message: 'must be postgresql://user:password@host:port/dbname' },
  LOG_LEVEL: { test: (v) => ['DEBUG', 'INFO', 'WARNING', 'ERROR'].includes(v), message: 'must be one of DEBUG, INFO, WARNING, ERROR' },
  POSTGRES_PASSWORD: { test: (v) => v.length >= 8, message: 'must be at least 8 characters' },
}

export const REQUIRED = ['TELEGRAM_BOT_TOKEN', 'DATABASE_URL', 'POSTGRES_PASSWORD', 'BOT_IMAGE']

export function validateEnvValues(vars: Record<string, string>): string[] {
  const problems: string[] = []
  for (const name of REQUIRED) if (!vars[name]) problems.push(`${name} is missing`)
  for (const [name, value] of Object.entries(vars)) {
    if (/CHANGE_ME/.test(value)) problems.push(`${name} still holds the CHANGE_ME placeholder`)
    else if (RULES[name] && !RULES[name].test(value)) problems.push(`${name} ${RULES[name].message}`)
  }
  return problems
}

/** Problems with the file itself and its values; never the values themselves (they are secrets). */
export function validateEnvFile(file: string): string[] {
  if (!fs.existsSync(file)) return [`${file} does not exist (create it from deployment/.env.production.template)`]
  const problems: string[] = []
  const mode = fs.statSync(file).mode & 0o777
  if (mode & 0o077) problems.push(`${file} is mode ${mode.toString(8)}; it holds secrets and must be 600 (chmod 600 ${file})`)
  return [...problems, ...validateEnvValues(parseEnvFile(fs.readFileSync(file, 'utf8')))]
}
