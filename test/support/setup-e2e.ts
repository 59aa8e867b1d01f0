import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { ensurePostgresImage } from '../../lib/db/pitr-image.ts'
import { ROOT } from './scripts.ts'
import { bedEnv } from './stack.ts'

// The e2e tier needs a real Docker Engine, both Compose versions, the stand-in images, the fixture
// bot in a local registry and the application repository: provision.sh makes whatever is missing
// (a warm run takes seconds) and fails with a message naming what it could not provide. Then the
// postgres service's image (the stand-in with pgBackRest, deployment/postgres) is built once, by
// the toolkit's own code, for every test file.
export default async function setup(): Promise<void> {
  const result = spawnSync('bash', [path.join(ROOT, 'test/e2e/bed/provision.sh')], { stdio: 'inherit' })
  if (result.status !== 0) throw new Error('The e2e test bed could not be provisioned (see the [bed] lines above); e2e tests were not run')
  const base = bedEnv().POSTGRES_IMAGE
  if (!base) throw new Error('test/e2e/bed/.bed.env has no POSTGRES_IMAGE')
  await ensurePostgresImage(base)
}
