// `npm run bench:deploy`: how long the bot is down during a deploy. Brings up a stack on the local
// Docker test bed, deploys v1.0.0 then v1.1.0, then redeploys v1.1.0 with --force N times (each a
// full deploy: backup, pull, migrations, switch, health gate), and prints the downtime each deploy
// recorded in its audit event: the old bot's last heartbeat to the new bot's first.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { ROOT } from '../test/support/scripts.ts'
import { bedEnv, createStack, exec } from '../test/support/stack.ts'

const ROUNDS = Number(process.env.BENCH_DEPLOYS ?? 5)
const GOAL_MEDIAN_S = 5

provision()
const stack = createStack('v2')
try {
  const appDir = path.join(stack.dir, 'app')
  await exec(['git', 'clone', '--quiet', bedEnv().APP_REPO!, appDir])
  const env = { APP_DIR: appDir, HEALTH_CHECK_TIMEOUT: '120' }
  for (const [i, args] of [['v1.0.0'], ['v1.1.0'], ...Array.from({ length: ROUNDS }, () => ['v1.1.0', '--force'])].entries()) {
    const started = Date.now()
    const result = await stack.script('deploy', [...args, '--yes'], env)
    if (result.code !== 0) throw new Error(`deploy ${args.join(' ')} exited ${result.code}:\n${result.stderr}`)
    console.log(`deploy ${i + 1}: ${args.join(' ')} took ${((Date.now() - started) / 1000).toFixed(1)}s`)
  }
  const downtimes = fs.readFileSync(path.join(stack.dir, 'deployments.log'), 'utf8').trim().split('\n')
    .map((line) => JSON.parse(line))
    .filter((e) => e.status === 'success' && typeof e.downtime_seconds === 'number')
    .map((e) => e.downtime_seconds as number)
  const sorted = [...downtimes].sort((a, b) => a - b)
  const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2]! : (sorted[sorted.length / 2 - 1]! + sorted[sorted.length / 2]!) / 2
  console.log(`\nDowntime over ${sorted.length} deploys with a running predecessor (seconds): ${sorted.map((d) => d.toFixed(1)).join(', ')}`)
  console.log(`min ${sorted[0]!.toFixed(1)}s  median ${median.toFixed(1)}s  max ${sorted.at(-1)!.toFixed(1)}s`)
  console.log(`goal: median <= ${GOAL_MEDIAN_S}s (the task plan allows 30s): ${median <= GOAL_MEDIAN_S ? 'met' : 'NOT met'}`)
} finally {
  await stack.down()
}

function provision(): void {
  const result = spawnSync('bash', [path.join(ROOT, 'test/e2e/bed/provision.sh')], { stdio: 'inherit' })
  if (result.status !== 0) throw new Error('the Docker test bed could not be provisioned')
}
