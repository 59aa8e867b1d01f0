# shellcheck shell=bash disable=SC2034
# Shared settings and helpers for provision.sh, smoke.sh and teardown.sh (sourced, not run).

BED_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$BED_DIR/../../.." && pwd)"

# Everything the bed downloads or builds lives here, so a warm run only checks and a teardown
# never touches anything else on the machine.
TTG_E2E_CACHE="${TTG_E2E_CACHE:-/var/cache/ttg-e2e}"
REGISTRY="${TTG_REGISTRY:-127.0.0.1:5000}"
BASE_IMAGE="${TTG_BASE_IMAGE:-ttg-base:bookworm}"
APP_REPO="${TTG_APP_REPO:-$TTG_E2E_CACHE/app.git}"
APP_TAGS=(v1.0.0 v1.1.0 v1.2.0 v1.3.0)
BED_ENV_FILE="${TTG_BED_ENV:-$BED_DIR/.bed.env}"
FIXTURE_DIR="$REPO_ROOT/test/fixtures/bot"

DOCKERD_PIDFILE="$TTG_E2E_CACHE/dockerd.pid"
REGISTRY_PIDFILE="$TTG_E2E_CACHE/registry.pid"

log() { printf '[bed %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bed] ERROR: %s\n' "$*" >&2; exit 1; }

# A pid file only counts while the process it names is still the program we started.
pid_alive() { # pidfile program-name
  local pid
  [[ -s "$1" ]] || return 1
  pid="$(cat "$1")"
  [[ -r "/proc/$pid/comm" ]] && [[ "$(cat "/proc/$pid/comm")" == "$2"* ]]
}

# Writes the tree of fixture release TAG (each release directory holds only what that release
# changes, applied on top of the previous ones, like commits) into DEST.
materialize_release() { # tag dest
  local tag="$1" dest="$2" t
  rm -rf "$dest" && mkdir -p "$dest"
  for t in "${APP_TAGS[@]}"; do
    [[ -d "$FIXTURE_DIR/$t" ]] || die "fixture release directory missing: $FIXTURE_DIR/$t"
    cp -a "$FIXTURE_DIR/$t/." "$dest/"
    [[ "$t" == "$tag" ]] && return 0
  done
  die "unknown fixture release: $tag"
}

tree_hash() { # dir... : content hash of every file under the directories, names included
  local d
  for d in "$@"; do (cd "$d" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum); done | sha256sum | cut -c1-16
}

# Compose v1 and v2 name containers differently; both set these labels.
compose_container() { # project service
  docker ps -aq --filter "label=com.docker.compose.project=$1" \
    --filter "label=com.docker.compose.service=$2" --filter "label=com.docker.compose.oneoff=False"
}
