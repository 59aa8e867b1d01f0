import { log } from '../core/log.ts'
import type { Mode } from '../core/deployment-config.ts'
import type { SetupSettings } from './settings.ts'

// What setup-droplet's steps share: the plan preflight settles, and the step running now (the
// failure line names it, so the operator knows where a re-run takes up).

/** What preflight settles before the first change; the steps after it read it, none changes it. */
export interface Plan {
  readonly s: SetupSettings
  readonly mode: Mode
  readonly selfSigned: boolean
  readonly staging: boolean
  readonly assumeYes: boolean
  /** harden sshd: on, not opted out, and a key keeps the operator's way in (checked in preflight) */
  readonly sshHardening: boolean
  readonly unattendedUpgrades: boolean
  /** APP_VERSION as given or kept in .env.production; null: the newest release tag, known once cloned */
  readonly requestedVersion: string | null
}

let current = 'Starting droplet setup'

/** Logs the step's line and remembers it for the failure line. */
export function step(line: string): void {
  current = line
  log.info(line)
}

export function currentStep(): string {
  return current
}
