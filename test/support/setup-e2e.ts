import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { ROOT } from './scripts.ts'

// The e2e tier needs a real Docker Engine, both Compose versions, the stand-in images, the fixture
// bot in a local registry and the application repository: provision.sh makes whatever is missing
// (a warm run takes seconds) and fails with a message naming what it could not provide.
export default function setup(): void {
  const result = spawnSync('bash', [path.join(ROOT, 'test/e2e/bed/provision.sh')], { stdio: 'inherit' })
  if (result.status !== 0) throw new Error('The e2e test bed could not be provisioned (see the [bed] lines above); e2e tests were not run')
}
