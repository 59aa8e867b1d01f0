import fs from 'node:fs'
import { composeStart, composeStop, type ComposeProject } from '../commands/compose.ts'
import { aptInstall } from '../commands/apt.ts'
import { OpsError } from '../core/errors.ts'
import { log } from '../core/log.ts'
import { looksTransient, retry } from '../core/retry.ts'
import { run } from '../core/runner.ts'
import { $ } from '../core/shell.ts'
import { certbotCertonly, certificatePaths, DEFAULT_LETSENCRYPT_DIR, shellLine } from '../commands/host.ts'
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
  await retry(() => run(aptInstall(packages)), { isTransient: looksTransient, what: 'apt-get install' })
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
  await retry(
    () => run(certbotCertonly({
      domain, email: plan.s.CERTBOT_EMAIL ?? null, staging: plan.staging, letsencryptDir,
      preHook: shellLine(composeStop(compose, ['nginx']).argv), postHook: shellLine(composeStart(compose, ['nginx']).argv),
    })),
    { isTransient: looksTransient, what: 'certbot' },
  )
  log.info(`Certificate for ${domain} issued${plan.staging ? ' (staging: not trusted by Telegram)' : ''}`)
  if (letsencryptDir !== DEFAULT_LETSENCRYPT_DIR) log.warn(`Certificates live in ${letsencryptDir}: renew them with \`certbot renew --config-dir ${letsencryptDir}\` (the certbot timer only renews ${DEFAULT_LETSENCRYPT_DIR})`)
}
