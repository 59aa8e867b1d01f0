import { createHash } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { TOOLKIT_DIR } from '../core/config.ts'
import { log } from '../core/log.ts'
import { $, $read } from '../core/shell.ts'

// The postgres service runs POSTGRES_IMAGE with pgBackRest added (deployment/postgres). It is
// built here, on the droplet, rather than pulled: the toolkit owns its Dockerfile, and a label
// with the hash of that directory and the base tells whether the local build is current.
const CONTEXT = path.join(TOOLKIT_DIR, 'deployment', 'postgres')
const BUILD_LABEL = 'toogoodtogo.postgres.build'

/** The tag the compose file gives the postgres service: `${POSTGRES_IMAGE}-pgbackrest`. */
export function postgresServerImage(base: string): string {
  return `${base}-pgbackrest`
}

export function buildKey(base: string, context = CONTEXT): string {
  const hash = createHash('sha256').update(base)
  for (const name of fs.readdirSync(context).sort()) hash.update(`\0${name}\0`).update(fs.readFileSync(path.join(context, name)))
  return hash.digest('hex').slice(0, 16)
}

/** Builds the server image unless the local one was built from this base and this directory. */
export async function ensurePostgresImage(base: string): Promise<string> {
  const image = postgresServerImage(base)
  const key = buildKey(base)
  const have = await $read({ nothrow: true, timeoutMs: 30_000 })`docker image inspect --format ${`{{index .Config.Labels "${BUILD_LABEL}"}}`} ${image}`
  if (have.exitCode === 0 && have.stdout.trim() === key) return image
  log.info(`Building ${image}: ${base} with pgBackRest (deployment/postgres; once per change)`)
  // labelled, so the next run can tell whether it is current
  await $({ timeoutMs: 20 * 60_000 })`docker build --quiet --build-arg ${`POSTGRES_IMAGE=${base}`} --label ${`${BUILD_LABEL}=${key}`} --tag ${image} ${CONTEXT}`
  return image
}
