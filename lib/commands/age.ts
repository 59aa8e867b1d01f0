import type { Command } from '../core/runner.ts'

// The bulk encryption is Debian's `age` binary in the runner's pipeline, not the age-encryption
// package: on this machine the binary encrypted 300 MiB in 1.1 s at 5 MB of memory, the package in
// 3.3 s at 135 MB (one JS thread, a buffer per 64 KiB chunk). The package serves for the keys
// (lib/offsite/identity.ts, key-pair.ts). Both speak the same format: each decrypts what the other encrypted.

/** age reads the file itself: the plaintext never passes through node (nor its garbage collector). */
export function ageEncryptCommand(recipient: string, file: string): Command {
  return { argv: ['age', '--encrypt', '--recipient', recipient, file] }
}

/** age writes the plaintext itself, into a file the caller created owner-only. */
export function ageDecryptCommand(identityFile: string, output: string): Command {
  return { argv: ['age', '--decrypt', '--identity', identityFile, '--output', output] }
}

/** age's own words when none of the identities given opens the file */
export const NO_IDENTITY_MATCHED = /no identity matched/i
