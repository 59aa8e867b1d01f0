#!/usr/bin/env bash
# Undoes what provision.sh and the e2e tests leave running:
#   - containers, volumes and networks of compose projects named ttg* (smoke and e2e tests);
#   - the registry and dockerd, but only if provision.sh started them (their pid files say so).
# --purge also removes the bed's images and its cache directory, so the next provision is cold.
# Installed packages and the Compose v2 plugin stay.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PREFIX="${TTG_PROJECT_PREFIX:-ttg}"
purge=false
case "${1:-}" in
  "") ;;
  --purge) purge=true ;;
  -h | --help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

stop_pid() { # pidfile program-name
  local pid
  pid_alive "$1" "$2" || { rm -f "$1"; return 0; }
  pid="$(cat "$1")"
  log "stopping $2 (pid $pid)"
  kill "$pid"
  for _ in $(seq 1 60); do
    [[ -d "/proc/$pid" ]] || break
    sleep 0.5
  done
  [[ -d "/proc/$pid" ]] && die "$2 (pid $pid) did not stop"
  rm -f "$1"
}

if docker info >/dev/null 2>&1; then
  # setup-droplet's e2e droplets: systemd containers named ${PREFIX}drop*, not compose projects.
  docker ps -aq --filter "name=^${PREFIX}drop" | xargs -r docker rm -f >/dev/null
  mapfile -t projects < <(docker ps -a --format '{{.Label "com.docker.compose.project"}}' | grep "^$PREFIX" | sort -u || true)
  for p in "${projects[@]}"; do
    log "removing compose project $p"
    docker ps -aq --filter "label=com.docker.compose.project=$p" | xargs -r docker rm -f >/dev/null
  done
  docker volume ls -q --filter label=com.docker.compose.project | while read -r v; do
    if [[ "$(docker volume inspect -f '{{index .Labels "com.docker.compose.project"}}' "$v")" == "$PREFIX"* ]]; then
      docker volume rm "$v" >/dev/null
    fi
  done
  docker network ls -q --filter label=com.docker.compose.project | while read -r n; do
    if [[ "$(docker network inspect -f '{{index .Labels "com.docker.compose.project"}}' "$n")" == "$PREFIX"* ]]; then
      docker network rm "$n" >/dev/null
    fi
  done
  if $purge; then
    log "removing bed images"
    # By id: rebuilt images keep their repository with tag <none>, which no name can address.
    docker images --format '{{.Repository}} {{.ID}}' \
      | awk -v reg="$REGISTRY/ttg-" '$1 ~ /^ttg-/ || index($1, reg) == 1 {print $2}' \
      | sort -u | xargs -r docker rmi -f >/dev/null
  fi
fi

stop_pid "$REGISTRY_PIDFILE" docker-regist
stop_pid "$DOCKERD_PIDFILE" dockerd
rm -rf /var/lib/ttg-e2e-droplets

if $purge; then
  log "removing $TTG_E2E_CACHE and $BED_ENV_FILE"
  rm -rf "$TTG_E2E_CACHE" "$BED_ENV_FILE"
fi
log "teardown done"
