import fs from 'node:fs'
import path from 'node:path'
import { startBotApi, type BotApiStandIn } from './bot-api.ts'
import { runScript, tempDir, urlModeEnv, type ScriptResult } from './scripts.ts'
import { bedEnv, exec } from './stack.ts'
import { ensureSwarmNodes, type SwarmNodes } from './swarm-nodes.ts'

// The bot stack on the e2e Swarm (test/support/swarm-nodes.ts), for test/e2e/swarm.test.ts and
// bench/swarm.ts: ORCHESTRATOR=swarm, the toolkit on the host driving the manager through
// DOCKER_HOST, the fixture bot in webhook mode with three replicas behind nginx, a "managed"
// PostgreSQL in a container beside the nodes (DB_MODE=url), the Bot API stand-in on the host.
//
// What the bed cannot show: no ip_vs module here, so neither a service's virtual IP nor the
// ingress routing mesh works. The stack runs with endpoint_mode dnsrr (nginx resolves the bot's
// tasks by DNS) and nginx's ports published in host mode on the ingress node; production keeps
// Swarm's defaults (VIP, routing mesh), which the bed does not exercise.
export const SECRET = 'e2e_webhook_secret'
export const DB = { name: 'toogoodtogo', user: 'toogoodtogo', password: 'e2ePassw0rdX' }

export interface SwarmStack {
  name: string
  swarm: SwarmNodes
  api: BotApiStandIn
  work: string
  /** the environment the scripts run with */
  env: Record<string, string>
  /** nginx's webhook on the ingress node (the manager), over TLS with a self-signed certificate */
  webhookUrl: string
  script(name: string, args: string[]): Promise<ScriptResult>
  psql(sql: string): Promise<string>
  /** the bot's running tasks: their image tag and node */
  botTasks(): Promise<{ tag: string; node: string }[]>
  destroy(): Promise<void>
}

export async function createSwarmStack(name = 'ttgswarmstack'): Promise<SwarmStack> {
  const bed = bedEnv()
  const images = ['v1.0.0', 'v1.1.0', 'v1.2.0', 'v1.3.0'].map((t) => `${bed.BOT_IMAGE}:${t}`)
  const swarm = await ensureSwarmNodes({ images: [...images, bed.NGINX_IMAGE ?? '', bed.REDIS_IMAGE ?? ''] })
  const { manager } = swarm
  await manager.docker(['stack', 'rm', name])
  await waitUntil(async () => (await manager.docker(['network', 'ls', '-q', '--filter', `name=${name}_`])).stdout.trim() === '', 60_000)
  must(await manager.docker(['node', 'update', '--label-add', 'ttg.data=true', '--label-add', 'ttg.ingress=true', manager.name]), 'labelling the manager')
  // nginx's certificate and certbot's webroot on the ingress node, where its bind mounts resolve
  must(await exec(['docker', 'exec', manager.container, 'sh', '-c', 'mkdir -p /etc/letsencrypt/live/localhost /var/www/certbot && cd /etc/letsencrypt/live/localhost && openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -keyout privkey.pem -out fullchain.pem 2>/dev/null']), 'certificate on the ingress node')

  const dbContainer = `${name}-db`
  await exec(['docker', 'rm', '-f', '-v', dbContainer])
  must(await exec(['docker', 'run', '--detach', '--name', dbContainer, '--label', `com.docker.compose.project=${swarm.prefix}`, '--network', swarm.network,
    '-e', `POSTGRES_DB=${DB.name}`, '-e', `POSTGRES_USER=${DB.user}`, '-e', `POSTGRES_PASSWORD=${DB.password}`, bed.POSTGRES_IMAGE ?? '']), 'starting the database')
  const dbIp = must(await exec(['docker', 'inspect', '--format', `{{(index .NetworkSettings.Networks "${swarm.network}").IPAddress}}`, dbContainer]), 'inspecting the database').stdout.trim()
  const databaseUrl = `postgresql://${DB.user}:${DB.password}@${dbIp}:5432/${DB.name}`
  const psql = async (sql: string): Promise<string> => {
    const r = await exec(['psql', '-h', dbIp, '-U', DB.user, '-d', DB.name, '-Atc', sql], { PGPASSWORD: DB.password })
    if (r.code !== 0) throw new Error(`psql failed: ${r.stderr}`)
    return r.stdout.trim()
  }
  await waitUntil(async () => (await psql('SELECT 1').catch(() => '')) === '1', 60_000)

  const api = await startBotApi('127.0.0.1')
  const work = tempDir('ttg-swarm-')
  const appDir = path.join(work, 'app')
  must(await exec(['git', 'clone', '--quiet', bed.APP_REPO ?? '', appDir]), 'cloning the app')
  const envFile = path.join(work, '.env.production')
  fs.writeFileSync(envFile, [
    'ENVIRONMENT=production', 'LOG_LEVEL=INFO', `BOT_IMAGE=${bed.BOT_IMAGE}`, 'APP_VERSION=v1.0.0',
    'TELEGRAM_BOT_TOKEN=123456:E2E-secret_token', 'TELEGRAM_WEBHOOK_URL=https://bot.example.com/webhook', `TELEGRAM_WEBHOOK_SECRET=${SECRET}`,
    `POSTGRES_DB=${DB.name}`, `POSTGRES_USER=${DB.user}`, `POSTGRES_PASSWORD=${DB.password}`, `DATABASE_URL=${databaseUrl}`, 'REDIS_URL=redis://redis:6379/0',
    'STRIPE_API_KEY=sk_test_e2e_key', `NGINX_IMAGE=${bed.NGINX_IMAGE}`, `REDIS_IMAGE=${bed.REDIS_IMAGE}`, 'DOMAIN=bot.example.com',
    'ORCHESTRATOR=swarm', 'BOT_REPLICAS=3', 'SWARM_ENDPOINT_MODE=dnsrr', 'SWARM_PUBLISH_MODE=host', 'NGINX_HTTP_PORT=80', 'NGINX_HTTPS_PORT=443',
    '',
  ].join('\n'), { mode: 0o600 })
  const env: Record<string, string> = {
    ...urlModeEnv(databaseUrl, work),
    DOCKER_HOST: manager.dockerHost,
    ENV_FILE: envFile,
    COMPOSE_PROJECT_NAME: name,
    APP_DIR: appDir,
    TELEGRAM_API_BASE: api.base,
    HEALTH_CHECK_TIMEOUT: '120',
    WATCH_SECONDS: '0',
    // nginx's certificate is for localhost; .env.production's DOMAIN (webhook mode needs one) is the public name
    DOMAIN: 'localhost',
  }
  return {
    name,
    swarm,
    api,
    work,
    env,
    webhookUrl: `https://${manager.ip}:443/webhook`,
    script: (script, args) => runScript(script, args, env),
    psql,
    async botTasks() {
      const r = await manager.docker(['service', 'ps', '--filter', 'desired-state=running', '--format', '{{.Image}}|{{.Node}}|{{.CurrentState}}', `${name}_bot`])
      return r.stdout.trim().split('\n').filter((l) => l.includes('|Running')).map((l) => {
        const [image = '', node = ''] = l.split('|')
        return { tag: image.split(':').pop() ?? '', node }
      })
    },
    async destroy() {
      await api.close()
      // Every node back, for the next run's fixture: a test may have killed one.
      for (const n of swarm.nodes) if ((await exec(['docker', 'inspect', '--format', '{{.State.Running}}', n.container])).stdout.trim() !== 'true') await n.start()
      await manager.docker(['stack', 'rm', name])
      await exec(['docker', 'rm', '-f', '-v', dbContainer])
      fs.rmSync(work, { recursive: true, force: true })
    },
  }
}

function must(r: ScriptResult, what: string): ScriptResult {
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${r.stderr || r.stdout}`)
  return r
}

export async function waitUntil(check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('timed out waiting')
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
}
