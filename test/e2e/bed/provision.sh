#!/usr/bin/env bash
# Provisions the Docker end-to-end test bed on a Debian 12 machine, as root:
#   Docker Engine + Compose v1 + Compose v2, a Debian base image built with debootstrap,
#   stand-in postgres/redis/nginx images and the monitoring stack's (Prometheus, Alertmanager and
#   three exporters, from Debian's packages), a local registry on 127.0.0.1:5000 holding those and
#   the fixture bot at v1.0.0..v1.3.0, and a bare git repository standing in for the app repo.
# Idempotent: each step checks first, so a warm run takes seconds. Writes $BED_ENV_FILE for the
# TypeScript e2e tests. Anything it cannot provide stops it with a message naming what is missing.
#
# Environment: TTG_E2E_CACHE (default /var/cache/ttg-e2e), TTG_REGISTRY (127.0.0.1:5000),
# TTG_DEBIAN_MIRROR (default: the machine's own apt source), TTG_APP_REPO, TTG_BED_ENV.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE_PACKAGES=postgresql-15,redis-server,nginx-light,python3-alembic,python3-psycopg2,curl
HOST_PACKAGES=(docker.io docker-compose docker-registry debootstrap git curl jq openssl)
COMPOSE_PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose

debian_mirror() {
  local uri
  if [[ -n "${TTG_DEBIAN_MIRROR:-}" ]]; then echo "$TTG_DEBIAN_MIRROR"; return; fi
  uri="$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)"
  [[ -n "$uri" ]] || uri="$(awk '/^deb / && $0 ~ /\/debian\/? / {for (i=2;i<=NF;i++) if ($i ~ /^http/) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)"
  [[ -n "$uri" ]] || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; set TTG_DEBIAN_MIRROR"
  echo "${uri%/}"
}

check_machine() {
  [[ "$(id -u)" == 0 ]] || die "must run as root (installs packages, starts dockerd)"
  [[ -r /etc/debian_version ]] || die "needs Debian 12 (bookworm): /etc/debian_version not found"
  # shellcheck disable=SC1091
  . /etc/os-release
  [[ "${VERSION_CODENAME:-}" == bookworm ]] || die "needs Debian 12 (bookworm), found ${PRETTY_NAME:-unknown}"
  mkdir -p "$TTG_E2E_CACHE/stamps"
}

install_host_packages() {
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then log "host packages present"; return; fi
  log "installing ${missing[*]}"
  apt-get update -qq >"$TTG_E2E_CACHE/apt.log" 2>&1 \
    || { tail -n 20 "$TTG_E2E_CACHE/apt.log" >&2; die "apt-get update failed: the Debian mirror is unreachable"; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$TTG_E2E_CACHE/apt.log" 2>&1 \
    || { tail -n 20 "$TTG_E2E_CACHE/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
}

start_dockerd() {
  if docker info >/dev/null 2>&1; then log "docker engine running"; return; fi
  command -v dockerd >/dev/null || die "dockerd not found after installing docker.io"
  log "starting dockerd (log: $TTG_E2E_CACHE/dockerd.log)"
  # setsid: dockerd must outlive this script and not receive the terminal's signals.
  setsid dockerd >>"$TTG_E2E_CACHE/dockerd.log" 2>&1 </dev/null &
  echo $! >"$DOCKERD_PIDFILE"
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    pid_alive "$DOCKERD_PIDFILE" dockerd || break
    sleep 0.5
  done
  tail -n 20 "$TTG_E2E_CACHE/dockerd.log" >&2 || true
  die "dockerd did not come up (see $TTG_E2E_CACHE/dockerd.log)"
}

# Debian 12 ships Compose v1 only; v2 comes from Debian 13's package, fetched through an apt state
# of its own so the machine's sources never see trixie.
install_compose_v2() {
  if docker compose version >/dev/null 2>&1; then log "compose v2 present: $(docker compose version --short)"; return; fi
  local mirror state deb
  mirror="$(debian_mirror)"
  state="$TTG_E2E_CACHE/apt-trixie"
  mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/deb"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$state/sources.list"
  local apt_opts=(-o "Dir::Etc::sourcelist=$state/sources.list" -o Dir::Etc::sourceparts=-
    -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache" -o APT::Get::List-Cleanup=0
    -o APT::Sandbox::User=root)
  log "fetching Compose v2 from Debian trixie's docker-compose package"
  apt-get "${apt_opts[@]}" update -qq || die "apt-get update for trixie failed ($mirror trixie): cannot get Compose v2"
  rm -f "$state/deb/"*.deb
  (cd "$state/deb" && apt-get "${apt_opts[@]}" download -qq docker-compose) || die "apt-get download docker-compose (trixie) failed"
  local debs=("$state/deb/"docker-compose_*.deb)
  deb="${debs[0]}"
  [[ -f "$deb" ]] || die "trixie docker-compose .deb not downloaded"
  rm -rf "$state/x" && dpkg-deb -x "$deb" "$state/x"
  [[ -x "$state/x/usr/libexec/docker/cli-plugins/docker-compose" ]] || die "$deb has no usr/libexec/docker/cli-plugins/docker-compose"
  install -D -m 0755 "$state/x/usr/libexec/docker/cli-plugins/docker-compose" "$COMPOSE_PLUGIN"
  docker compose version >/dev/null 2>&1 || die "docker compose (v2 plugin at $COMPOSE_PLUGIN) does not run"
  rm -rf "$state"
  log "compose v2 installed: $(docker compose version --short)"
}

# The base image is keyed by its package list, so changing the list rebuilds it.
build_base_image() {
  local key tarball mirror rootfs
  key="$(echo "bookworm $BASE_PACKAGES" | sha256sum | cut -c1-12)"
  if [[ "$(docker image inspect -f '{{index .Config.Labels "ttg.base.key"}}' "$BASE_IMAGE" 2>/dev/null)" == "$key" ]]; then
    log "base image $BASE_IMAGE present"; return
  fi
  tarball="$TTG_E2E_CACHE/rootfs-bookworm-$key.tar"
  if [[ ! -s "$tarball" ]]; then
    mirror="$(debian_mirror)"
    rootfs="$TTG_E2E_CACHE/rootfs.tmp"
    rm -rf "$rootfs"
    log "debootstrap bookworm from $mirror (about a minute)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$rootfs" "$mirror" \
      >"$TTG_E2E_CACHE/debootstrap.log" 2>&1 \
      || { tail -n 20 "$TTG_E2E_CACHE/debootstrap.log" >&2; die "debootstrap failed (see $TTG_E2E_CACHE/debootstrap.log)"; }
    # Downloaded .debs and apt lists would only make every layer above heavier.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
  fi
  log "importing $tarball as $BASE_IMAGE"
  docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c "LABEL ttg.base.key=$key" \
    "$tarball" "$BASE_IMAGE" >/dev/null || die "docker import of $tarball failed"
}

start_registry() {
  if curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1; then log "registry answering on $REGISTRY"; return; fi
  command -v docker-registry >/dev/null || die "docker-registry not found after installing the docker-registry package"
  mkdir -p "$TTG_E2E_CACHE/registry"
  # Debian's packaged config demands htpasswd auth; the bed's registry is loopback-only.
  cat >"$TTG_E2E_CACHE/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $TTG_E2E_CACHE/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
  log "starting docker-registry on $REGISTRY (log: $TTG_E2E_CACHE/registry.log)"
  setsid docker-registry serve "$TTG_E2E_CACHE/registry.yml" >>"$TTG_E2E_CACHE/registry.log" 2>&1 </dev/null &
  echo $! >"$REGISTRY_PIDFILE"
  for _ in $(seq 1 40); do
    curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 && return 0
    pid_alive "$REGISTRY_PIDFILE" docker-regist || break
    sleep 0.25
  done
  tail -n 20 "$TTG_E2E_CACHE/registry.log" >&2 || true
  die "docker-registry did not answer on $REGISTRY (see $TTG_E2E_CACHE/registry.log)"
}

in_registry() { # name tag
  curl -fsS -o /dev/null -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/$1/manifests/$2" 2>/dev/null
}

# Builds CONTEXT into $REGISTRY/NAME:TAG and pushes it, unless the registry already holds the
# build of exactly this context on this base (recorded in a stamp).
build_and_push() { # name tag context [build args...]
  local name="$1" tag="$2" context="$3" key stamp ref base_id
  shift 3
  base_id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE")"
  key="$(printf '%s %s %s\n' "$(tree_hash "$context")" "$base_id" "$*" | sha256sum | cut -c1-16)"
  stamp="$TTG_E2E_CACHE/stamps/$name-$tag"
  ref="$REGISTRY/$name:$tag"
  if [[ "$(cat "$stamp" 2>/dev/null)" == "$key" ]] && in_registry "$name" "$tag"; then
    log "$ref up to date"; return 1
  fi
  log "building $ref"
  # Output kept aside: the CLI's legacy-builder notice would otherwise bury the bed's own lines.
  docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" "$@" -t "$ref" "$context" >"$TTG_E2E_CACHE/build.log" 2>&1 \
    || { tail -n 30 "$TTG_E2E_CACHE/build.log" >&2; die "docker build of $ref from $context failed"; }
  docker push "$ref" >"$TTG_E2E_CACHE/build.log" 2>&1 \
    || { tail -n 30 "$TTG_E2E_CACHE/build.log" >&2; die "docker push $ref failed"; }
  echo "$key" >"$stamp"
}

build_standins() {
  # Tags follow the Debian package versions inside, not the official images they replace.
  build_and_push ttg-postgres 15 "$BED_DIR/images/postgres" || true
  build_and_push ttg-redis 7.0 "$BED_DIR/images/redis" || true
  build_and_push ttg-nginx 1.22 "$BED_DIR/images/nginx" || true
  # deployment/monitoring's images: each installs its Debian package on the base at build time,
  # from the mirror in the base's sources.list, over the host's network so that a build reaches
  # the mirror as debootstrap did (a loopback proxy included). The five: about 45 s when cold.
  build_and_push ttg-prometheus 2.42 "$BED_DIR/images/prometheus" --network host || true
  build_and_push ttg-alertmanager 0.25 "$BED_DIR/images/alertmanager" --network host || true
  build_and_push ttg-postgres-exporter 0.11 "$BED_DIR/images/postgres-exporter" --network host || true
  build_and_push ttg-redis-exporter 1.45 "$BED_DIR/images/redis-exporter" --network host || true
  build_and_push ttg-nginx-exporter 0.11 "$BED_DIR/images/nginx-exporter" --network host || true
}

build_bot_releases() {
  local tag src="$TTG_E2E_CACHE/src"
  for tag in "${APP_TAGS[@]}"; do
    materialize_release "$tag" "$src/$tag"
    # The local tag is dropped after the push so deploys under test really pull from the registry.
    if build_and_push ttg-bot "$tag" "$src/$tag" --build-arg "APP_VERSION=$tag"; then
      docker rmi "$REGISTRY/ttg-bot:$tag" >/dev/null
    fi
  done
}

# One commit and one annotated tag per release, with fixed dates and author, so the repository's
# hashes are the same on every machine and every rebuild.
build_app_repo() {
  local key stamp="$TTG_E2E_CACHE/stamps/app-repo" work tag n=0
  key="$(tree_hash "$FIXTURE_DIR")"
  if [[ "$(cat "$stamp" 2>/dev/null)" == "$key" ]] && git -C "$APP_REPO" rev-parse -q --verify "refs/tags/${APP_TAGS[-1]}" >/dev/null 2>&1; then
    log "app repository $APP_REPO up to date"; return
  fi
  log "building app repository $APP_REPO"
  work="$(mktemp -d)"
  git init -q -b main "$work/app"
  for tag in "${APP_TAGS[@]}"; do
    n=$((n + 1))
    materialize_release "$tag" "$work/tree"
    find "$work/app" -mindepth 1 -maxdepth 1 ! -name .git -exec rm -rf {} +
    cp -a "$work/tree/." "$work/app/"
    local date="2025-01-0${n}T12:00:00Z"
    (
      cd "$work/app"
      export GIT_AUTHOR_NAME=ttg-fixture GIT_AUTHOR_EMAIL=fixture@example.invalid GIT_AUTHOR_DATE="$date"
      export GIT_COMMITTER_NAME=ttg-fixture GIT_COMMITTER_EMAIL=fixture@example.invalid GIT_COMMITTER_DATE="$date"
      git add -A
      git -c commit.gpgsign=false commit -q -m "Release $tag"
      git -c tag.gpgsign=false tag -a "$tag" -m "Release $tag"
    )
  done
  rm -rf "$APP_REPO.partial"
  git clone -q --bare "$work/app" "$APP_REPO.partial"
  rm -rf "$APP_REPO" && mv "$APP_REPO.partial" "$APP_REPO"
  rm -rf "$work"
  echo "$key" >"$stamp"
}

write_bed_env() {
  local tmp="$BED_ENV_FILE.partial"
  cat >"$tmp" <<EOF
# Written by test/e2e/bed/provision.sh for the e2e tests (and sourced by smoke.sh), on every run.
REGISTRY=$REGISTRY
BOT_IMAGE=$REGISTRY/ttg-bot
POSTGRES_IMAGE=$REGISTRY/ttg-postgres:15
REDIS_IMAGE=$REGISTRY/ttg-redis:7.0
NGINX_IMAGE=$REGISTRY/ttg-nginx:1.22
PROMETHEUS_IMAGE=$REGISTRY/ttg-prometheus:2.42
ALERTMANAGER_IMAGE=$REGISTRY/ttg-alertmanager:0.25
POSTGRES_EXPORTER_IMAGE=$REGISTRY/ttg-postgres-exporter:0.11
REDIS_EXPORTER_IMAGE=$REGISTRY/ttg-redis-exporter:1.45
NGINX_EXPORTER_IMAGE=$REGISTRY/ttg-nginx-exporter:0.11
BASE_IMAGE=$BASE_IMAGE
APP_REPO=$APP_REPO
APP_TAGS="${APP_TAGS[*]}"
COMPOSE_V2="docker compose"
COMPOSE_V1=$(command -v docker-compose)
TTG_E2E_CACHE=$TTG_E2E_CACHE
EOF
  mv "$tmp" "$BED_ENV_FILE"
  cp "$BED_ENV_FILE" "$TTG_E2E_CACHE/bed.env"
}

summary() {
  log "ready:"
  {
    echo "  docker engine   $(docker version -f '{{.Server.Version}}') ($(docker info -f '{{.Driver}}'))"
    echo "  compose v2      $(docker compose version --short)"
    echo "  compose v1      $(docker-compose version --short 2>/dev/null)"
    echo "  base image      $BASE_IMAGE ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%d MB", $1/1e6}'))"
    echo "  registry        http://$REGISTRY: $(curl -fsS "http://$REGISTRY/v2/_catalog" | tr -d '\n')"
    echo "  app repository  $APP_REPO: $(git -C "$APP_REPO" tag | tr '\n' ' ')"
    echo "  env for tests   $BED_ENV_FILE"
  } >&2
}

check_machine
install_host_packages
start_dockerd
install_compose_v2
build_base_image
start_registry
build_standins
build_bot_releases
build_app_repo
write_bed_env
summary
