import { describe, expect, it } from 'vitest'
import { ageDecryptCommand, ageEncryptCommand } from '../../lib/commands/age.ts'
import { dataKey, pairListing, parseKey, sidecarKey, type ListedObject } from '../../lib/offsite/keys.ts'

const at = (iso: string) => new Date(iso)
const obj = (key: string, size = 10, when = '2026-12-01T00:00:00Z'): ListedObject => ({ key, size, lastModified: at(when) })

describe('key naming', () => {
  it('names the object and its sidecar from the prefix and backup id', () => {
    expect(dataKey('toogoodtogo/', 'shop_20261201_030000')).toBe('toogoodtogo/shop_20261201_030000.sql.gz.age')
    expect(sidecarKey('toogoodtogo/shop_20261201_030000.sql.gz.age')).toBe('toogoodtogo/shop_20261201_030000.sql.gz.age.json')
    expect(dataKey('', 'shop_20261201_030000_2')).toBe('shop_20261201_030000_2.sql.gz.age')
  })

  it('parses only keys it named, under its prefix', () => {
    expect(parseKey('p/', 'p/shop_20261201_030000.sql.gz.age')).toEqual({ role: 'data', backupId: 'shop_20261201_030000', dataKey: 'p/shop_20261201_030000.sql.gz.age' })
    expect(parseKey('p/', 'p/shop_20261201_030000.sql.gz.age.json')).toMatchObject({ role: 'sidecar', backupId: 'shop_20261201_030000' })
    expect(parseKey('p/', 'other/shop_20261201_030000.sql.gz.age')).toBeNull()
    expect(parseKey('p/', 'p/shop_20261201_030000.sql.gz')).toBeNull()
    expect(parseKey('p/', 'p/notes.txt.sql.gz.age')).toBeNull()
    expect(parseKey('p/', 'p/sub/shop_20261201_030000.sql.gz.age')).toBeNull()
  })
})

describe('pairListing', () => {
  it('pairs each object with its sidecar and sets aside what is missing its other half', () => {
    const listed = pairListing('p/', [
      obj('p/shop_20261202_030000.sql.gz.age'),
      obj('p/shop_20261202_030000.sql.gz.age.json', 900),
      obj('p/shop_20261201_030000.sql.gz.age'),
      obj('p/shop_20261201_030000.sql.gz.age.json', 900),
      obj('p/shop_20261203_030000.sql.gz.age'),
      obj('p/shop_20261130_030000.sql.gz.age.json', 900),
      obj('p/README.txt'),
    ])
    expect(listed.pairs.map((p) => p.backupId)).toEqual(['shop_20261201_030000', 'shop_20261202_030000'])
    expect(listed.pairs[0]?.sidecar.key).toBe('p/shop_20261201_030000.sql.gz.age.json')
    expect(listed.unconfirmed.map((o) => o.key)).toEqual(['p/shop_20261203_030000.sql.gz.age'])
    expect(listed.orphanSidecars.map((o) => o.key)).toEqual(['p/shop_20261130_030000.sql.gz.age.json'])
  })
})

describe('age commands', () => {
  it('encrypts to the recipient and decrypts with the identity file, as exact argv', () => {
    expect(ageEncryptCommand('age1abc', '/b/x.sql.gz').argv).toEqual(['age', '--encrypt', '--recipient', 'age1abc', '/b/x.sql.gz'])
    expect(ageDecryptCommand('/etc/ttg/age.key', '/b/x.sql.gz.partial').argv).toEqual(['age', '--decrypt', '--identity', '/etc/ttg/age.key', '--output', '/b/x.sql.gz.partial'])
  })
})
