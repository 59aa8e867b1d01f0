import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto'
import { addSecret } from '../core/redact.ts'
import { OffsiteError } from '../core/errors.ts'
import { identityOf } from './identity.ts'
import type { Sidecar } from './sidecar.ts'

// age authenticates nothing about who encrypted: the public recipient is enough to make a copy that
// decrypts cleanly. What makes a copy this droplet's is an HMAC under a key the bucket never holds,
// derived from the age identity: the operator keeps that identity off the droplet anyway for
// disaster recovery, so a new droplet with it needs nothing more to tell its copies from forgeries.
export const MAC_SCHEME = 'hmac-sha256/hkdf-sha256(age-identity)'
const HKDF_INFO = 'toogoodtogo off-site backup authentication v1'

export function macKeyFromIdentity(identity: string): Buffer {
  // bech32 is one case throughout: a copy saved in lowercase is still the same identity
  const key = Buffer.from(hkdfSync('sha256', Buffer.from(identity.trim().toUpperCase(), 'utf8'), Buffer.alloc(0), HKDF_INFO, 32))
  addSecret(key.toString('hex'))
  return key
}

/**
 * The MAC key for copies encrypted to `recipient`, from the identity in `identityFile` that belongs
 * to it; null when this droplet does not hold that identity (it was set up with the public key only).
 */
export async function macKeyFor(identityFile: string | null, recipient: string): Promise<Buffer | null> {
  const identity = identityFile ? await identityOf(identityFile, recipient) : null
  return identity ? macKeyFromIdentity(identity) : null
}

export function hmacHex(key: Buffer, data: string | Buffer): string {
  return createHmac('sha256', key).update(data).digest('hex')
}

/** Constant time: how much of a MAC matched must not be measurable. */
export function sameMac(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex')
  const y = Buffer.from(b, 'hex')
  return x.length === 32 && y.length === 32 && timingSafeEqual(x, y)
}

/** What the sidecar's MAC covers: the sidecar as JSON with its own MAC left out. */
export function sidecarMacInput(json: unknown): string {
  if (typeof json !== 'object' || json === null) return JSON.stringify(json)
  const { authentication, ...rest } = json as Record<string, unknown>
  if (typeof authentication !== 'object' || authentication === null) return JSON.stringify(rest)
  const { sidecar_mac: _own, ...covered } = authentication as Record<string, unknown>
  return JSON.stringify({ ...rest, authentication: covered })
}

export type Authenticity = { authentic: true } | { authentic: false; legacy: boolean; reason: string }

/**
 * Whether a sidecar was written by a holder of the identity. A sidecar without a MAC is a copy made
 * before copies were authenticated, or by someone with the public key only: the two look the same.
 */
export function sidecarAuthenticity(sidecar: Sidecar, signed: string, key: Buffer): Authenticity {
  const auth = sidecar.authentication
  if (!auth) return { authentic: false, legacy: true, reason: 'it carries no MAC (made before off-site copies were authenticated, or by someone holding only the public key)' }
  if (!sameMac(hmacHex(key, signed), auth.sidecar_mac)) {
    return { authentic: false, legacy: false, reason: "its sidecar's MAC does not match the key derived from BACKUP_AGE_IDENTITY_FILE (forged or altered in the bucket)" }
  }
  return { authentic: true }
}

export function notAuthentic(key: string, reason: string, hint = ''): OffsiteError {
  return new OffsiteError('verify', `Off-site backup ${key} is not authentic: ${reason}; not used${hint}`)
}
