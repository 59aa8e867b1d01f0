import fs from 'node:fs'
import { composeBase, type ComposeProject } from '../commands/compose.ts'
import { aptInstall } from '../commands/apt.ts'
import { OpsError } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { looksTransient, retry } from '../core/retry.ts'
import { $, quote } from '../core/shell.ts'
import { certificatePaths, DEFAULT_LETSENCRYPT_DIR } from '../commands/host.ts'
import { step, type Plan } from './plan.ts'

// Webhook mode's public ingress: nginx is the stack's own service; the host gets certbot (unless
// the certificate is self-signed) and the certificate nginx serves.

export async function installNginxAndCertbot(plan: Plan): Promise<void> {
  if (plan.mode === 'polling') {
    step('Skipping nginx and certbot: polling mode has no public ingress')
    return
  }
  step('Installing nginx and certbot')
  // nginx is the stack's own `nginx` service (webhook profile), so the host needs no nginx
  // package, which would only take ports 80 and 443 from it.
  const packages = plan.selfSigned ? [] : plan.s.SETUP_WEBHOOK_PACKAGES
  if (packages.length === 0) {
    log.info('nginx runs as the compose service; with --self-signed no certbot is needed')
    return
  }
  log.info(`nginx runs as the compose service; installing ${packages.join(' ')}`)
  await retry(() => aptInstall(packages), { isTransient: looksTransient, what: 'apt-get install' })
}

export async function configureSsl(plan: Plan, env: Record<string, string>, compose: ComposeProject): Promise<void> {
  if (plan.mode === 'polling') {
    step('Skipping SSL certificates: polling mode has no public ingress')
    return
  }
  step('Configuring SSL certificates')
  const domain = env.DOMAIN
  // validateDeploymentConfig requires it in webhook mode; a plain record cannot say so
  if (!domain) throw new OpsError('config', `${plan.s.cfg.envFile} has no DOMAIN: webhook mode needs it for the certificate`)
  const letsencryptDir = env.LETSENCRYPT_DIR || DEFAULT_LETSENCRYPT_DIR
  const cert = certificatePaths(letsencryptDir, domain)
  // nginx mounts the webroot for renewals; created here so Docker does not make it a root-owned
  // empty directory on its own. (install -d follows a link: these are root's own places.)
  await $`install -d -m 0755 -o root -g root ${env.CERTBOT_WEBROOT || '/var/www/certbot'}`
  if (fs.existsSync(cert.fullchain) && fs.existsSync(cert.privkey)) {
    log.info(`Certificate for ${domain} already present in ${cert.dir}`)
    return
  }
  if (plan.selfSigned) {
    await $`install -d -m 0700 -o root -g root ${cert.dir}`
    await $`openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 825 -subj ${`/CN=${domain}`} -addext ${`subjectAltName=DNS:${domain}`} -keyout ${cert.privkey} -out ${cert.fullchain}`
    log.warn(`Self-signed certificate for ${domain} in ${cert.dir}: Telegram accepts it only when it is uploaded with setWebhook's certificate parameter`)
    return
  }
  // The first certificate comes from certbot's own standalone server: nginx cannot start without a
  // certificate, and nothing else holds port 80 yet. The hooks (shell lines) are saved in the
  // renewal configuration, so the package's renewal timer stops nginx for the seconds a renewal takes.
  const email = plan.s.CERTBOT_EMAIL ? ['--email', plan.s.CERTBOT_EMAIL] : ['--register-unsafely-without-email']
  const staging = plan.staging ? ['--staging'] : []
  // Only when moved: the package's renewal timer runs a plain `certbot renew`, which reads
  // /etc/letsencrypt and would never renew certificates kept elsewhere.
  const configDir = letsencryptDir === DEFAULT_LETSENCRYPT_DIR ? [] : ['--config-dir', letsencryptDir]
  const nginx = (action: string) => [...composeBase(compose), action, 'nginx'].map(quote).join(' ')
  await retry(
    () => $({ timeoutMs: 10 * 60_000 })`certbot certonly --standalone --non-interactive --agree-tos ${email} ${staging} ${configDir} --domain ${domain} --pre-hook ${nginx('stop')} --post-hook ${nginx('start')}`,
    { isTransient: looksTransient, what: 'certbot' },
  )
  log.info(`Certificate for ${domain} issued${plan.staging ? ' (staging: not trusted by Telegram)' : ''}`)
  if (letsencryptDir !== DEFAULT_LETSENCRYPT_DIR) log.warn(`Certificates live in ${letsencryptDir}: renew them with \`certbot renew --config-dir ${letsencryptDir}\` (the certbot timer only renews ${DEFAULT_LETSENCRYPT_DIR})`)
}
