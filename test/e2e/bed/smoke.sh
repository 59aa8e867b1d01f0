#!/usr/bin/env bash
# Smoke test of deployment/docker-compose.prod.yml on the provisioned bed, with one Compose:
#   COMPOSE="docker compose" test/e2e/bed/smoke.sh     (v2, the default)
#   COMPOSE=docker-compose   test/e2e/bed/smoke.sh     (v1)
# Brings the stack up at v1.0.0 under a test project, runs the migrations through the bot image,
# waits for every service to be healthy, reads the bot's /health, dumps and restores the database
# through `exec -T postgres`, trips the bot's hang switch, then the webhook profile (nginx, TLS,
# secret header, rate limit) on loopback ports, and removes everything with `down -v`.
# SMOKE_HTTP_PORT / SMOKE_HTTPS_PORT (18080 / 18443) pick the loopback ports for nginx.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -s "$BED_ENV_FILE" ]] || die "$BED_ENV_FILE not found: run test/e2e/bed/provision.sh first"
# shellcheck disable=SC1090
source "$BED_ENV_FILE"

COMPOSE="${COMPOSE:-docker compose}"
read -r -a COMPOSE_CMD <<<"$COMPOSE"
if [[ "${COMPOSE_CMD[0]}" == *docker-compose ]]; then variant=v1; else variant=v2; fi
"${COMPOSE_CMD[@]}" version >/dev/null 2>&1 || die "'$COMPOSE' does not run: run provision.sh"

PROJECT="ttgsmoke-$variant"
HTTP_PORT="${SMOKE_HTTP_PORT:-18080}"
HTTPS_PORT="${SMOKE_HTTPS_PORT:-18443}"
DOMAIN=smoke.test
WEBHOOK_SECRET=smoke_secret_123
WORK="$(mktemp -d /tmp/ttg-smoke.XXXXXX)"
export ENV_FILE="$WORK/.env.production"

cat >"$ENV_FILE" <<EOF
ENVIRONMENT=test
LOG_LEVEL=DEBUG
BOT_IMAGE=$BOT_IMAGE
APP_VERSION=v1.0.0
POSTGRES_IMAGE=$POSTGRES_IMAGE
REDIS_IMAGE=$REDIS_IMAGE
NGINX_IMAGE=$NGINX_IMAGE
TELEGRAM_BOT_TOKEN=000000:smoke
TELEGRAM_WEBHOOK_URL=
TELEGRAM_WEBHOOK_SECRET=$WEBHOOK_SECRET
POSTGRES_DB=toogoodtogo
POSTGRES_USER=ttg
POSTGRES_PASSWORD=smokepw
DATABASE_URL=postgresql://ttg:smokepw@postgres:5432/toogoodtogo
REDIS_URL=redis://redis:6379/0
STRIPE_API_KEY=sk_test_smoke
DOMAIN=$DOMAIN
LETSENCRYPT_DIR=$WORK/letsencrypt
CERTBOT_WEBROOT=$WORK/certbot
NGINX_HTTP_PORT=127.0.0.1:$HTTP_PORT
NGINX_HTTPS_PORT=127.0.0.1:$HTTPS_PORT
EOF

# The containers' env_files, as the toolkit derives them (lib/core/container-env.ts): the bot gets
# no superuser password; postgres no bucket settings (PITR is off here).
export BOT_ENV_FILE="$WORK/.env.bot" POSTGRES_ENV_FILE="$WORK/.env.postgres"
grep -v '^POSTGRES_PASSWORD=' "$ENV_FILE" >"$BOT_ENV_FILE"
: >"$POSTGRES_ENV_FILE"

c() { "${COMPOSE_CMD[@]}" -p "$PROJECT" --env-file "$ENV_FILE" -f "$REPO_ROOT/deployment/docker-compose.prod.yml" "$@"; }
psql_c() { c exec -T postgres psql -X -v ON_ERROR_STOP=1 -U ttg "$@"; }

cleanup() {
  local rc=$?
  if ((rc != 0)); then
    log "FAILED; last logs:"
    c --profile webhook logs --tail 30 >&2 2>&1 || true
  fi
  c --profile webhook down -v --remove-orphans >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

fail() { die "smoke ($COMPOSE): $*"; }

wait_healthy() { # timeout-seconds service...
  local deadline=$((SECONDS + $1)) s cid state
  shift
  for s in "$@"; do
    while :; do
      cid="$(compose_container "$PROJECT" "$s")"
      state="$( [[ -n "$cid" ]] && docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$cid")"
      [[ "$state" == running/healthy ]] && break
      ((SECONDS < deadline)) || fail "$s not healthy in time (state: ${state:-no container})"
      sleep 1
    done
    log "$s healthy"
  done
}

log "compose $variant: $("${COMPOSE_CMD[@]}" version --short 2>/dev/null || true), project $PROJECT"
c down -v --remove-orphans >/dev/null 2>&1 || true
c config -q || fail "compose config is invalid"

c pull -q bot || c pull bot || fail "pull of $BOT_IMAGE:v1.0.0 failed"
log "migrations"
c run --rm bot alembic upgrade head || fail "alembic upgrade head failed"
c up -d || fail "up -d failed"
wait_healthy 120 postgres redis bot

[[ "$(psql_c -d toogoodtogo -tAc 'SELECT version_num FROM alembic_version')" == 0001 ]] || fail "alembic_version is not 0001"
[[ "$(psql_c -d toogoodtogo -tAc 'SELECT count(*) FROM offers')" == 4 ]] || fail "seed rows missing"

for s in postgres redis; do
  [[ -z "$(docker port "$(compose_container "$PROJECT" "$s")")" ]] || fail "$s publishes a port"
done
# Limits and policies must survive both Compose implementations' translation of the file.
settings="$(docker inspect -f '{{.HostConfig.Memory}} {{.HostConfig.RestartPolicy.Name}} {{.Config.StopTimeout}} {{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config "max-size"}} {{index .HostConfig.LogConfig.Config "max-file"}}' "$(compose_container "$PROJECT" bot)")"
[[ "$settings" == "536870912 unless-stopped 20 json-file 10m 5" ]] || fail "bot container settings: $settings"

health="$(c exec -T bot curl -fsS --max-time 10 http://127.0.0.1:8000/health)" || fail "bot /health did not answer 200"
jq -e '.status == "healthy" and .postgres_connected and .redis_connected and .version == "v1.0.0"
       and (.uptime_seconds | type == "number") and .last_heartbeat != null' <<<"$health" >/dev/null \
  || fail "unexpected /health body: $health"
log "bot /health: $health"
[[ -n "$(c exec -T redis redis-cli GET bot:heartbeat)" ]] || fail "no bot:heartbeat in Redis"

log "pg_dump | gzip through exec -T"
c exec -T postgres pg_dump -U ttg -d toogoodtogo | gzip >"$WORK/dump.sql.gz" || fail "pg_dump failed"
gzip -t "$WORK/dump.sql.gz" || fail "dump is not valid gzip"
zcat "$WORK/dump.sql.gz" | grep -q '^-- PostgreSQL database dump complete' || fail "dump is incomplete"
zcat "$WORK/dump.sql.gz" | grep -q '^COPY public.offers ' || fail "dump has no offers data"
psql_c -d postgres -qc 'CREATE DATABASE smoke_restore' >/dev/null
gunzip -c "$WORK/dump.sql.gz" | psql_c -q -d smoke_restore >/dev/null || fail "restore through psql failed"
[[ "$(psql_c -d smoke_restore -tAc 'SELECT count(*) FROM offers')" == 4 ]] || fail "restored copy differs"
log "dump $(stat -c %s "$WORK/dump.sql.gz") bytes, restored into smoke_restore"

log "hang switch"
c exec -T bot touch /tmp/hang
hb1="$(c exec -T bot cat /tmp/heartbeat)"
if c exec -T bot curl -fsS --max-time 3 http://127.0.0.1:8000/health >/dev/null 2>&1; then fail "/health answered while hung"; fi
hb2="$(c exec -T bot cat /tmp/heartbeat)"
[[ "$hb1" == "$hb2" ]] || fail "heartbeat kept running while hung"
c exec -T bot rm -f /tmp/hang
c exec -T bot curl -fsS --max-time 10 -o /dev/null http://127.0.0.1:8000/health || fail "/health did not recover"

log "webhook profile"
mkdir -p "$WORK/letsencrypt/live/$DOMAIN" "$WORK/certbot"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$DOMAIN" \
  -keyout "$WORK/letsencrypt/live/$DOMAIN/privkey.pem" -out "$WORK/letsencrypt/live/$DOMAIN/fullchain.pem" 2>/dev/null
chmod 644 "$WORK/letsencrypt/live/$DOMAIN/privkey.pem"
c --profile webhook up -d nginx || fail "up nginx failed"
wait_healthy 60 nginx
https=(curl -sk --resolve "$DOMAIN:$HTTPS_PORT:127.0.0.1" -o /dev/null -w '%{http_code}')
url="https://$DOMAIN:$HTTPS_PORT/webhook"
code="$("${https[@]}" -H "X-Telegram-Bot-Api-Secret-Token: $WEBHOOK_SECRET" -d '{"update_id":1}' "$url")"
[[ "$code" == 200 ]] || fail "webhook with secret answered $code"
code="$("${https[@]}" -d '{"update_id":1}' "$url")"
[[ "$code" == 403 ]] || fail "webhook without secret answered $code"
code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HTTP_PORT/webhook")"
[[ "$code" == 301 ]] || fail "plain HTTP answered $code instead of a redirect"
curl -sk --resolve "$DOMAIN:$HTTPS_PORT:127.0.0.1" -D - -o /dev/null "https://$DOMAIN:$HTTPS_PORT/" \
  | grep -qi '^strict-transport-security:' || fail "no HSTS header"
limited="$(curl -sk --resolve "$DOMAIN:$HTTPS_PORT:127.0.0.1" -H "X-Telegram-Bot-Api-Secret-Token: $WEBHOOK_SECRET" \
  -d '{}' -o /dev/null -w '%{http_code}\n' --parallel --parallel-max 20 "$url?n=[1-150]" | grep -c '^429$' || true)"
((limited > 0)) || fail "150 rapid webhook calls were not rate limited"
log "nginx: 200 with secret, 403 without, 301 on HTTP, HSTS, $limited of 150 rapid calls limited"

c --profile webhook down -v --remove-orphans >/dev/null 2>&1 || fail "down -v failed"
[[ -z "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ]] || fail "containers left after down"
[[ -z "$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")" ]] || fail "volumes left after down -v"
log "smoke passed with $COMPOSE"
