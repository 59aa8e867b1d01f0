import os from 'node:os'
import { which } from 'zx'
import type { Command } from './runner.ts'

// pigz compresses on every core yet writes a plain gzip stream that `gunzip | psql` reads.
let pigz: boolean | undefined

async function hasPigz(): Promise<boolean> {
  pigz ??= (await which('pigz', { nothrow: true })) !== null
  return pigz
}

export const GZIP_LEVEL = 6

export function compressCommand(usePigz: boolean): Command {
  return usePigz
    ? { argv: ['pigz', `-${GZIP_LEVEL}`, '--processes', String(os.availableParallelism()), '--stdout'] }
    : { argv: ['gzip', `-${GZIP_LEVEL}`, '--stdout'] }
}

export function decompressCommand(usePigz: boolean): Command {
  return { argv: [usePigz ? 'pigz' : 'gzip', '--decompress', '--stdout'] }
}

export async function compressor(): Promise<Command> {
  return compressCommand(await hasPigz())
}

export async function decompressor(): Promise<Command> {
  return decompressCommand(await hasPigz())
}
