import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { initialisedValues, setupEverCompleted, setupStateContent, setupStateFile } from '../../lib/setup/settings.ts'
import { TSX_MARK, tsxWrapper } from '../../lib/setup/tsx-command.ts'

let dir: string
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'setup-rerun-'))
})
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true })
})

const marker = () => path.join(dir, '.setup-complete')
const artifacts = () => path.join(dir, 'artifacts.json')

describe('has setup ever completed here?', () => {
  it('no state file, no marker, nothing deployed: never (a re-run applies its answers)', () => {
    fs.writeFileSync(path.join(dir, '.env.production'), 'BOT_IMAGE=typo\n')
    expect(setupEverCompleted(dir, marker(), artifacts())).toBe(false)
  })

  it('its state file says so, and keeps saying so once the marker is removed to run setup again', () => {
    fs.writeFileSync(setupStateFile(dir), setupStateContent('2026-12-07T05:00:00Z'))
    expect(setupEverCompleted(dir, marker(), artifacts())).toBe(true)
  })

  it('a host set up before the state file: the marker or a recorded deployment count', () => {
    fs.writeFileSync(marker(), '{}')
    expect(setupEverCompleted(dir, marker(), artifacts())).toBe(true)
    fs.rmSync(marker())
    fs.writeFileSync(artifacts(), '{}')
    expect(setupEverCompleted(dir, marker(), artifacts())).toBe(true)
  })

  it('a damaged state file stops setup, naming it, and is left untouched', () => {
    fs.writeFileSync(setupStateFile(dir), '{"setup_completed_at": 1')
    expect(() => setupEverCompleted(dir, marker(), artifacts())).toThrow(/setup_state\.json is invalid .* left untouched/)
    expect(fs.readFileSync(setupStateFile(dir), 'utf8')).toBe('{"setup_completed_at": 1')
  })
})

describe('what a failed run initialised', () => {
  const earlier = { POSTGRES_USER: 'toogoodtogo', POSTGRES_PASSWORD: 'p1', POSTGRES_DB: 'toogoodtogo', DATABASE_URL: 'postgresql://toogoodtogo:p1@postgres:5432/toogoodtogo', BOT_IMAGE: 'registry/typo', STRIPE_API_KEY: 'sk_old' }

  it('the database credentials once the volume holds a database; nothing else', () => {
    expect(initialisedValues(earlier, true)).toEqual({ POSTGRES_USER: 'toogoodtogo', POSTGRES_PASSWORD: 'p1', POSTGRES_DB: 'toogoodtogo', DATABASE_URL: 'postgresql://toogoodtogo:p1@postgres:5432/toogoodtogo' })
  })

  it('nothing while no database was initialised', () => {
    expect(initialisedValues(earlier, false)).toEqual({})
  })
})

describe('the tsx command on PATH', () => {
  it("runs the toolkit's own tsx with the node that ran setup, paths quoted for sh", () => {
    expect(tsxWrapper('/usr/local/bin/node', "/opt/it's/deployment")).toBe([
      '#!/bin/sh',
      TSX_MARK,
      "# (/opt/it's/deployment), so that `tsx scripts/deploy.ts v1.2.0` works there; rewritten by each setup run.",
      `exec '/usr/local/bin/node' '/opt/it'\\''s/deployment/node_modules/tsx/dist/cli.mjs' "$@"`,
      '',
    ].join('\n'))
  })
})
