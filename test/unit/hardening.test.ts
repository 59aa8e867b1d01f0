import { describe, expect, it } from 'vitest'
import { autoUpgradesContent, hasAuthorizedKey, sshdDropIn, sshdSettingsNotApplied } from '../../lib/setup/hardening.ts'

describe('host hardening (issue 21)', () => {
  it('the sshd drop-in: no password, no keyboard-interactive, root by key only', () => {
    expect(sshdDropIn().split('\n').filter((l) => l && !l.startsWith('#'))).toEqual(['PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'PermitRootLogin prohibit-password'])
  })

  it('what `sshd -T` applies: an earlier file that set a keyword first is named; the old spelling of prohibit-password counts', () => {
    const applied = 'port 22\npasswordauthentication no\nkbdinteractiveauthentication no\npermitrootlogin without-password\n'
    expect(sshdSettingsNotApplied(applied)).toEqual([])
    expect(sshdSettingsNotApplied(applied.replace('passwordauthentication no', 'passwordauthentication yes'))).toEqual(['PasswordAuthentication is yes'])
    expect(sshdSettingsNotApplied('port 22\n')).toEqual(['PasswordAuthentication is unset', 'KbdInteractiveAuthentication is unset', 'PermitRootLogin is unset'])
  })

  it('an authorized key: any key type, with options before it; comments and empty files are none', () => {
    expect(hasAuthorizedKey('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIabc op@laptop\n')).toBe(true)
    expect(hasAuthorizedKey('restrict,command="/opt/x" ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ ci\n')).toBe(true)
    expect(hasAuthorizedKey('ecdsa-sha2-nistp256 AAAAE2VjZHNh x\n')).toBe(true)
    expect(hasAuthorizedKey('# ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIabc old\n\n')).toBe(false)
    expect(hasAuthorizedKey('')).toBe(false)
  })

  it('unattended upgrades: lists refreshed and the upgrade run daily', () => {
    expect(autoUpgradesContent()).toBe('APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n')
  })
})
