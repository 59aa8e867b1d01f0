import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import zlib from 'node:zlib'
import { describe, expect, it } from 'vitest'
import { parseDfAvailable, requireRoomForCopy, uncompressedEstimate } from '../../lib/core/disk.ts'

const MB = 1024 * 1024

describe('room for the scratch copy on the postgres volume', () => {
  it('needs the live database, the dump uncompressed and MIN_FREE_DISK_MB; short of that, the contract message with every figure', () => {
    const room = { parts: { 'the live database': 300 * MB, 'the backup uncompressed': 200 * MB }, marginMb: 2048 }
    expect(requireRoomForCopy({ ...room, availableBytes: 2548 * MB }, 'on the postgres volume')).toBe(2548 * MB)
    expect(() => requireRoomForCopy({ ...room, availableBytes: 2547 * MB }, 'on the postgres volume')).toThrow(
      'Insufficient disk space on the postgres volume: 2.5GB available, 2.5GB required (the live database 300MB + the backup uncompressed 200MB + MIN_FREE_DISK_MB 2GB); nothing was changed',
    )
    expect(() => requireRoomForCopy({ ...room, availableBytes: 900 * MB }, 'here')).toThrow(expect.objectContaining({ kind: 'disk_space', message: expect.stringMatching(/^Insufficient disk space here: 900MB available, 2.5GB required/) }))
  })

  it("reads df -P's Available column (1K blocks) and refuses anything else", () => {
    const df = 'Filesystem     1024-blocks  Used Available Capacity Mounted on\n/dev/vda1         51474912 9000 40000000      19% /var/lib/postgresql/data\n'
    expect(parseDfAvailable(df)).toBe(40_000_000 * 1024)
    expect(() => parseDfAvailable('df: /nope: No such file or directory')).toThrow(/Cannot read the free space from df/)
  })

  it("estimates a dump's uncompressed size from the gzip trailer, never below the file's own size", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttg-isize-'))
    const text = 'INSERT INTO t VALUES (1);\n'.repeat(40_000)
    const file = path.join(dir, 'a.sql.gz')
    fs.writeFileSync(file, zlib.gzipSync(text))
    expect(uncompressedEstimate(file)).toBe(Buffer.byteLength(text))
    // A trailer smaller than the file (a size past 4 GiB wraps) counts the wrap.
    const wrapped = Buffer.from(zlib.gzipSync(text))
    wrapped.writeUInt32LE(10, wrapped.length - 4)
    fs.writeFileSync(file, wrapped)
    expect(uncompressedEstimate(file)).toBe(2 ** 32 + 10)
  })
})
