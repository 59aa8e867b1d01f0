import { describe, expect, it } from 'vitest'
import { newEvent, type DeployEvent } from '../../lib/release/deploy-state.ts'
import { parseCreatedAt, parseReleaseImages, releasesToRemove } from '../../lib/release/prune.ts'

const now = new Date('2026-12-07T05:00:00Z')
const daysAgo = (d: number): Date => new Date(now.getTime() - d * 86_400_000)

function deployed(tag: string, at: Date, type: DeployEvent['event_type'] = 'deploy'): DeployEvent {
  const iso = at.toISOString().slice(0, 19) + 'Z'
  return { ...newEvent(type, tag, null, 'manual'), started_at: iso, completed_at: iso, status: 'success' }
}

const rules = { keep: 3, retentionDays: 30, protect: [] as (string | null)[], now }

describe('which release images go', () => {
  it('keeps the last KEEP_RELEASES and anything used within the retention, removes the rest', () => {
    const images = [
      { tag: 'v1.0.0', createdAt: daysAgo(90) },
      { tag: 'v1.1.0', createdAt: daysAgo(90) },
      { tag: 'v1.2.0', createdAt: daysAgo(90) },
      { tag: 'v1.3.0', createdAt: daysAgo(20) },
    ]
    const events = [deployed('v1.1.0', daysAgo(25)), deployed('v1.2.0', daysAgo(40))]
    expect(releasesToRemove(images, events, { ...rules, keep: 1 }).sort()).toEqual(['v1.0.0', 'v1.2.0'])
    expect(releasesToRemove(images, events, { ...rules, keep: 3 })).toEqual(['v1.0.0'])
  })

  it('never the running or the previous release, however old', () => {
    const images = ['v1.0.0', 'v1.1.0', 'v1.2.0', 'v1.3.0'].map((tag, i) => ({ tag, createdAt: daysAgo(90 - i) }))
    expect(releasesToRemove(images, [], { ...rules, keep: 1 }).sort()).toEqual(['v1.0.0', 'v1.1.0', 'v1.2.0'])
    expect(releasesToRemove(images, [], { ...rules, keep: 1, protect: ['v1.0.0', 'v1.1.0'] })).toEqual(['v1.2.0'])
  })

  it('a retention of 0 days leaves exactly KEEP_RELEASES, ordered by last use, not by build', () => {
    const images = ['v1.0.0', 'v1.1.0', 'v1.2.0', 'v1.3.0', 'v1.4.0'].map((tag) => ({ tag, createdAt: daysAgo(5) }))
    const events = ['v1.0.0', 'v1.1.0', 'v1.2.0', 'v1.3.0', 'v1.4.0'].map((tag, i) => deployed(tag, daysAgo(4 - i)))
    // a rollback to v1.0.0 yesterday makes it recent again
    events.push(deployed('v1.0.0', daysAgo(0.5), 'rollback'))
    expect(releasesToRemove(images, events, { ...rules, retentionDays: 0 }).sort()).toEqual(['v1.1.0', 'v1.2.0'])
  })

  it('an image whose age cannot be told is kept', () => {
    const images = [{ tag: 'v1.0.0', createdAt: null }, { tag: 'v1.1.0', createdAt: daysAgo(90) }]
    expect(releasesToRemove(images, [], { ...rules, keep: 0 })).toEqual(['v1.1.0'])
  })
})

describe("reading Docker's answers (untrusted text)", () => {
  it('parses CreatedAt with its offset; anything else is null', () => {
    expect(parseCreatedAt('2026-12-07 06:50:52 +0200 CEST')?.toISOString()).toBe('2026-12-07T04:50:52.000Z')
    expect(parseCreatedAt('About an hour ago')).toBeNull()
    expect(parseCreatedAt('')).toBeNull()
  })

  it('keeps release tags only (not latest, <none>, or a -pgbackrest build)', () => {
    const text = ['v1.2.0\t2026-12-07 04:50:52 +0000 UTC', 'latest\t2026-12-07 04:50:52 +0000 UTC', '<none>\t2026-12-01 00:00:00 +0000 UTC', `${'a'.repeat(40)}\tgarbage`, 'v1.2.0; rm -rf /\tx', ''].join('\n')
    expect(parseReleaseImages(text)).toEqual([
      { tag: 'v1.2.0', createdAt: new Date('2026-12-07T04:50:52Z') },
      { tag: 'a'.repeat(40), createdAt: null },
    ])
  })
})
