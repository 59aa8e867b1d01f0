// Secret values are collected once (environment + .env.production) and replaced in every line the
// toolkit prints or writes, so no code path has to remember to redact.
const SECRET_NAME = /(TOKEN|PASSWORD|PASSWD|SECRET|API_KEY|PRIVATE_KEY|ACCESS_KEY|_KEY$|WEBHOOK_URL|DSN)/i
// Where secrets are kept is not one (ALERTMANAGER_SECRETS_DIR): masked, every line naming the
// directory would read `***/slack_webhook_url`.
const DIRECTORY_NAME = /_DIR$/i
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*:)([^@\s/]+)(@)/gi
const MASK = '***'

const secrets = new Set<string>()

export function addSecret(value: string | undefined): void {
  // Very short values would mask ordinary words in the log ("1", "yes"): not secrets worth hiding.
  if (value && value.length >= 4) secrets.add(value)
}

export function addSecretsFrom(vars: Record<string, string | undefined>): void {
  for (const [name, value] of Object.entries(vars)) {
    if (!value) continue
    if (SECRET_NAME.test(name) && !DIRECTORY_NAME.test(name)) addSecret(value)
    for (const match of value.matchAll(URL_PASSWORD)) {
      addSecret(match[2])
      addSecret(safeDecode(match[2] ?? ''))
    }
  }
}

export function redact(text: string): string {
  let out = text.replace(URL_PASSWORD, `$1${MASK}$3`)
  const longestFirst = [...secrets].sort((a, b) => b.length - a.length)
  for (const secret of longestFirst) out = out.split(secret).join(MASK)
  return out
}

export function clearSecretsForTests(): void {
  secrets.clear()
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value)
  } catch {
    return value
  }
}
