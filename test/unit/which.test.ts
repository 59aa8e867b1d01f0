import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { which } from 'zx'

describe('zx\'s which: the one PATH lookup (gzip picks pigz by it)', () => {
  it('the first executable file of that name on PATH, like `command -v`; a plain file or a directory is skipped', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-which-'))
    const plain = path.join(dir, 'plain')
    const folder = path.join(dir, 'folder')
    const bin = path.join(dir, 'bin')
    for (const d of [plain, folder, bin]) fs.mkdirSync(d)
    fs.writeFileSync(path.join(plain, 'tool'), '', { mode: 0o644 })
    fs.mkdirSync(path.join(folder, 'tool'))
    fs.writeFileSync(path.join(bin, 'tool'), '#!/bin/sh\n', { mode: 0o755 })
    expect(which.sync('tool', { path: [plain, folder, '', bin].join(':'), nothrow: true })).toBe(path.join(bin, 'tool'))
    expect(which.sync('tool', { path: [plain, folder].join(':'), nothrow: true })).toBeNull()
    expect(which.sync('sh', { nothrow: true })).toMatch(/\/sh$/)
  })
})
