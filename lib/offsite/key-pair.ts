import path from 'node:path'
import { addSecret } from '../core/redact.ts'

// setup-droplet's side of the off-site copies: the age key pair every copy is encrypted to.

/** Where the identity lives when the answers do not say: in DEPLOY_DIR, the deploy user's. */
export function defaultIdentityFile(deployDir: string): string {
  return path.join(deployDir, 'backup-age-identity.txt')
}

/**
 * A new X25519 key pair. Not generateIdentity(): its post-quantum hybrid keys are refused by
 * Debian 12's age 1.1, which encrypts every copy (lib/commands/age.ts).
 */
export async function generateKeyPair(): Promise<{ identity: string; recipient: string }> {
  const { generateX25519Identity, identityToRecipient } = await import('age-encryption')
  const identity = await generateX25519Identity()
  addSecret(identity)
  return { identity, recipient: await identityToRecipient(identity) }
}

/** The file age reads with --identity: a comment saying what it is, then the key. */
export function identityFileContent(identity: string, recipient: string, createdAt: string): string {
  return `# toogoodtogo off-site backups: the age identity that decrypts them (created ${createdAt})\n# public key: ${recipient}\n${identity}\n`
}

/** What the operator must read once, and keep: without it no off-site copy can be read again. */
export function identityNotice(identity: string, recipient: string, file: string): string {
  const rule = '='.repeat(78)
  return [
    rule,
    'OFF-SITE BACKUP KEY: save this identity somewhere off this droplet NOW (a password manager).',
    'Every off-site copy is encrypted to it and authenticated with a key derived from it; if this',
    'droplet is lost, only this line can decrypt them and tell them from forgeries.',
    'It is shown once and never logged. On this droplet it is stored at:',
    `  ${file} (mode 600)`,
    `Public key (BACKUP_AGE_RECIPIENT): ${recipient}`,
    '',
    identity,
    rule,
    '',
  ].join('\n')
}
