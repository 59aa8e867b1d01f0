import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { TOOLKIT_DIR } from '../../lib/core/config.ts'
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

  it('nginx: TLS 1.2 and 1.3 only; the TLS 1.2 suites are forward-secret (ECDHE/DHE) and AEAD (GCM, ChaCha20-Poly1305), client order', () => {
    const conf = fs.readFileSync(path.join(TOOLKIT_DIR, 'deployment/nginx/ssl.conf.template'), 'utf8')
    expect(conf).toMatch(/^\s*ssl_protocols TLSv1\.2 TLSv1\.3;$/m)
    expect(conf).toMatch(/^\s*ssl_prefer_server_ciphers off;$/m)
    const suites = /^\s*ssl_ciphers ([^;]+);$/m.exec(conf)?.[1]?.split(':') ?? []
    expect(suites.length).toBeGreaterThan(0)
    for (const suite of suites) expect(suite).toMatch(/^(ECDHE-(ECDSA|RSA)|DHE-RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/)
  })
})
