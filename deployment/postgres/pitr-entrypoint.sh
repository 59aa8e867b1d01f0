#!/bin/bash
# Writes pgBackRest's configuration from the container environment (compose passes PITR_* and
# OFFSITE_S3_* from .env.production), turns WAL archiving on when PITR_ENABLED=true, then hands
# over to the image's own entrypoint. A file, not PGBACKREST_* variables: `compose exec` and the
# archive_command both read it, and an empty variable would be an error to pgBackRest.
set -euo pipefail

conf=/etc/pgbackrest/pgbackrest.conf

repo2_lines() {
  local endpoint="${OFFSITE_S3_ENDPOINT:-}" scheme hostport host port
  scheme="${endpoint%%://*}"
  hostport="${endpoint#*://}"
  hostport="${hostport%%/*}"
  host="${hostport%%:*}"
  port=""
  [[ "$hostport" == *:* ]] && port="${hostport##*:}"
  if [[ "$scheme" != https ]]; then
    echo "pitr-entrypoint: OFFSITE_S3_ENDPOINT=$endpoint is not https://: pgBackRest's S3 client needs TLS; WAL goes to repo1 only" >&2
    return
  fi
  local prefix="${OFFSITE_S3_PREFIX-toogoodtogo/}"
  [[ -z "$prefix" || "$prefix" == */ ]] || prefix="$prefix/"
  cat <<CONF
repo2-type=s3
repo2-path=/${prefix}pgbackrest
repo2-s3-bucket=${OFFSITE_S3_BUCKET}
repo2-s3-endpoint=${host}
repo2-s3-region=${OFFSITE_S3_REGION:-us-east-1}
repo2-s3-key=${OFFSITE_S3_ACCESS_KEY_ID:-}
repo2-s3-key-secret=${OFFSITE_S3_SECRET_ACCESS_KEY:-}
repo2-s3-uri-style=path
repo2-storage-verify-tls=${PITR_REPO2_VERIFY_TLS:-y}
repo2-cipher-type=aes-256-cbc
repo2-cipher-pass=${PITR_CIPHER_PASSWORD}
repo2-retention-full=${PITR_RETENTION_FULL:-2}
CONF
  [[ -n "$port" ]] && echo "repo2-storage-port=${port}"
  return 0
}

write_conf() {
  local tmp="$conf.tmp.$$"
  (
    umask 077
    {
      echo "# Written by pitr-entrypoint.sh at container start; edit .env.production, not this file."
      echo "[global]"
      echo "repo1-path=/var/lib/pgbackrest"
      echo "repo1-retention-full=${PITR_RETENTION_FULL:-2}"
      echo "start-fast=y"
      echo "compress-type=lz4"
      echo "log-level-console=info"
      echo "log-level-stderr=off"
      echo "log-level-file=off"
      if [[ -n "${OFFSITE_S3_BUCKET:-}" && -n "${PITR_CIPHER_PASSWORD:-}" ]]; then repo2_lines; fi
      echo
      echo "[main]"
      echo "pg1-path=${PGDATA:-/var/lib/postgresql/data}"
      echo "pg1-socket-path=/var/run/postgresql"
      echo "pg1-user=${POSTGRES_USER:-postgres}"
    } >"$tmp"
  )
  [[ "$(id -u)" == 0 ]] && chown postgres:postgres "$tmp"
  mv -f "$tmp" "$conf"
}

write_conf
if [[ "${1:-}" == postgres && "${PITR_ENABLED:-false}" == true ]]; then
  set -- "$@" -c archive_mode=on -c "archive_command=pgbackrest --stanza=main archive-push %p" \
    -c "archive_timeout=${PITR_ARCHIVE_TIMEOUT:-60}"
fi
exec docker-entrypoint.sh "$@"
