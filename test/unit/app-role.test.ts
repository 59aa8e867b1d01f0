import { describe, expect, it } from 'vitest'
import { appRoleOf, roleSql, scramVerifier } from '../../lib/db/app-role.ts'

describe("the bot's database role, from DATABASE_URL", () => {
  it('is the role of a URL on the compose service that is not the superuser', () => {
    expect(appRoleOf('postgresql://bot:Pw123456789012@postgres:5432/toogoodtogo', 'toogoodtogo')).toEqual({ user: 'bot', password: 'Pw123456789012' })
    // still the superuser: moved by the next deploy; another host: a managed database's own roles
    expect(appRoleOf('postgresql://toogoodtogo:pw@postgres:5432/toogoodtogo', 'toogoodtogo')).toBeNull()
    expect(appRoleOf('postgresql://app:pw@db.example.com:25060/app', 'toogoodtogo')).toBeNull()
    expect(appRoleOf(undefined, 'toogoodtogo')).toBeNull()
    expect(() => appRoleOf('postgresql://Bot%22x:pw@postgres:5432/toogoodtogo', 'toogoodtogo')).toThrow(/lowercase letters, digits and _/)
    expect(() => appRoleOf('postgresql://bot@postgres:5432/toogoodtogo', 'toogoodtogo')).toThrow(/no password/)
  })
  it('gets its password as a SCRAM verifier, never in clear', () => {
    const verifier = scramVerifier('pencil', Buffer.from('salt-of-16-bytes'))
    expect(verifier).toMatch(/^SCRAM-SHA-256\$4096:c2FsdC1vZi0xNi1ieXRlcw==\$[A-Za-z0-9+/]{43}=:[A-Za-z0-9+/]{43}=$/)
    expect(scramVerifier('pencil', Buffer.from('salt-of-16-bytes'))).toBe(verifier)
    const sql = roleSql({ user: 'bot', password: 'Pw123456789012' })
    expect(sql).not.toContain('Pw123456789012')
    expect(sql).toContain('NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD \'SCRAM-SHA-256$4096:')
  })
})
