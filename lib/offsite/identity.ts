import fs from 'node:fs'
import { addSecret } from '../core/redact.ts'
import { OffsiteError } from '../core/errors.ts'

// The private key side, needed only to download. age-encryption is loaded here, on first use, so
// a backup run that only uploads does not carry it.

/**
 * Checks that BACKUP_AGE_IDENTITY_FILE can decrypt a copy made for `expected` before a byte is
 * downloaded, and says which key is needed when it cannot. Returns the file for `age --identity`.
 */
export async function identityFileFor(identityFile: string | null, expected: string, what: string): Promise<string> {
  const needed = `${what} was encrypted for ${expected}; only the identity (AGE-SECRET-KEY-1...) of that key, kept off the droplet when off-site copies were set up, can decrypt it`
  if (!identityFile) throw new OffsiteError('identity', `BACKUP_AGE_IDENTITY_FILE is not set: ${needed}`, { variable: 'BACKUP_AGE_IDENTITY_FILE' })
  let stat: fs.Stats
  try {
    stat = fs.statSync(identityFile)
  } catch {
    throw new OffsiteError('identity', `BACKUP_AGE_IDENTITY_FILE=${identityFile} does not exist: ${needed}`, { variable: 'BACKUP_AGE_IDENTITY_FILE' })
  }
  // A private key others can read is a key others may have copied: refuse rather than use it.
  if ((stat.mode & 0o077) !== 0) {
    const mode = (stat.mode & 0o777).toString(8)
    throw new OffsiteError('config', `BACKUP_AGE_IDENTITY_FILE=${identityFile} is mode ${mode}; a private key must be readable by its owner only (chmod 600 ${identityFile})`, { variable: 'BACKUP_AGE_IDENTITY_FILE' })
  }
  const held = await recipientsOf(identityFile)
  if (held.length === 0) {
    throw new OffsiteError('identity', `BACKUP_AGE_IDENTITY_FILE=${identityFile} holds no age identity (a line AGE-SECRET-KEY-1...): ${needed}`, { variable: 'BACKUP_AGE_IDENTITY_FILE' })
  }
  if (!held.includes(expected)) {
    throw new OffsiteError('identity', `BACKUP_AGE_IDENTITY_FILE=${identityFile} holds the key for ${held.join(', ')}, not ${expected}: ${needed}`, { variable: 'BACKUP_AGE_IDENTITY_FILE' })
  }
  return identityFile
}

/** The public keys of the identities in an age identity file (comments and blank lines skipped). */
export async function recipientsOf(identityFile: string): Promise<string[]> {
  let text: string
  try {
    text = fs.readFileSync(identityFile, 'utf8')
  } catch (error) {
    throw new OffsiteError('identity', `Cannot read BACKUP_AGE_IDENTITY_FILE=${identityFile}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, { variable: 'BACKUP_AGE_IDENTITY_FILE' })
  }
  return (await keysIn(text)).map((k) => k.recipient)
}

/** The identity in `identityFile` whose public key is `recipient`; null when it holds none (or cannot be read). */
export async function identityOf(identityFile: string, recipient: string): Promise<string | null> {
  let text: string
  try {
    text = fs.readFileSync(identityFile, 'utf8')
  } catch {
    return null
  }
  return (await keysIn(text)).find((k) => k.recipient === recipient)?.identity ?? null
}

async function keysIn(text: string): Promise<{ identity: string; recipient: string }[]> {
  const keys: { identity: string; recipient: string }[] = []
  for (const line of text.split('\n').map((l) => l.trim())) {
    if (!line.startsWith('AGE-SECRET-KEY-')) continue
    addSecret(line)
    try {
      const { identityToRecipient } = await import('age-encryption')
      keys.push({ identity: line, recipient: await identityToRecipient(line) })
    } catch {
      // a damaged line: it cannot decrypt anything, and the callers' errors say what is needed
    }
  }
  return keys
}
