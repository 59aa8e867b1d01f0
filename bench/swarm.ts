// `npm run bench:swarm`: failed webhook requests and p99 latency during a deploy on a Docker Swarm
// of three engines (Swarm's start-first rolling update, three replicas behind nginx; the e2e bed's
// Swarm, test/support/swarm-stack.ts) against the same figures on one host (Compose blue-green,
// one bot behind nginx), measured in one run under the same load: BENCH_RATE signed updates a
// second through nginx over TLS, from IDLE_SECONDS before the deploy v1.0.0 -> v1.1.0 to its end.
// Run it alone on the bed (it uses the shared Docker engine): under the e2e lock.
import { startBotApi } from '../test/support/bot-api.ts'
import { createSwarmStack, SECRET } from '../test/support/swarm-stack.ts'
import { composeWebhookStack, formatSummary, startLoad, summarize, type Summary } from './webhook.ts'

const RATE = Number(process.env.BENCH_RATE ?? 50)
const IDLE_SECONDS = Number(process.env.BENCH_IDLE_SECONDS ?? 10)

interface Measured {
  idle: Summary
  deploy: Summary
  seconds: number
}

/** Load from the start; the first IDLE_SECONDS with no deploy; then the deploy of v1.1.0 under it. */
async function measure(url: string, deploy: () => Promise<{ code: number; stderr: string }>): Promise<Measured> {
  const load = startLoad({ url, secret: SECRET, rate: RATE })
  await new Promise((r) => setTimeout(r, IDLE_SECONDS * 1000))
  const from = load.now()
  const r = await deploy()
  const to = load.now()
  const samples = await load.stop()
  if (r.code !== 0) throw new Error(`deploy v1.1.0 exited ${r.code}:\n${r.stderr}`)
  return { idle: summarize(samples, 0, from), deploy: summarize(samples, from, to), seconds: (to - from) / 1000 }
}

async function oneHost(): Promise<Measured> {
  const api = await startBotApi()
  const { stack, env, url } = await composeWebhookStack(api.base)
  try {
    const first = await stack.script('deploy', ['v1.0.0', '--yes'], env)
    if (first.code !== 0) throw new Error(`deploy v1.0.0 exited ${first.code}:\n${first.stderr}`)
    return await measure(url, () => stack.script('deploy', ['v1.1.0', '--yes'], env))
  } finally {
    await stack.compose(['--profile', 'webhook', 'rm', '--stop', '--force', 'nginx'])
    await stack.down()
    await api.close()
  }
}

async function onSwarm(): Promise<Measured> {
  const stack = await createSwarmStack('ttgswarmbench')
  try {
    const first = await stack.script('deploy', ['v1.0.0', '--yes'])
    if (first.code !== 0) throw new Error(`deploy v1.0.0 on the Swarm exited ${first.code}:\n${first.stdout}\n${first.stderr}`)
    return await measure(stack.webhookUrl, () => stack.script('deploy', ['v1.1.0', '--yes']))
  } finally {
    await stack.destroy()
  }
}

const host = await oneHost()
const swarm = await onSwarm()
console.log(`\n${RATE} signed requests/s through nginx over TLS; deploy v1.0.0 -> v1.1.0 under load:`)
console.log(`  ${formatSummary('one host, idle', host.idle)}`)
console.log(`  ${formatSummary(`one host, Compose blue-green deploy (${host.seconds.toFixed(0)} s)`, host.deploy)}`)
console.log(`  ${formatSummary('Swarm of 3 nodes, idle', swarm.idle)}`)
console.log(`  ${formatSummary(`Swarm of 3 nodes, start-first rolling update of 3 replicas (${swarm.seconds.toFixed(0)} s)`, swarm.deploy)}`)
console.log(`\nfailed during the deploy: one host ${host.deploy.failed}, Swarm ${swarm.deploy.failed}; p99: one host ${host.deploy.p99} ms, Swarm ${swarm.deploy.p99} ms`)
