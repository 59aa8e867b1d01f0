#!/usr/bin/env bash
# setup-droplet.sh: the one command for a fresh droplet. The other wrappers assume Node and the
# toolkit's node_modules; this one runs first on a bare machine, so it makes sure of both, saying
# what it does, then hands over to scripts/setup-droplet.ts through scripts/run.sh (the toolkit's own
# tsx; it also keeps node from taking --env-file for itself):
#   1. Node.js >= 20 on PATH: used as it is. Otherwise, as root, Debian's own nodejs (+ npm) when
#      apt offers version 20 or newer (Debian 13), else NodeSource's nodejs (Debian 12's is 18):
#      their apt repository deb.nodesource.com/node_${SETUP_NODE_MAJOR:-22}.x, signed by their key.
#   2. node_modules missing: `npm ci --omit=dev` in the toolkit.
# With --dry-run nothing is installed: it says what it would install and, without Node, stops there.
set -euo pipefail

NODE_MIN_MAJOR=20
NODE_MAJOR="${SETUP_NODE_MAJOR:-22}"
NODESOURCE_KEY_URL=https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key
NODESOURCE_KEYRING=/etc/apt/keyrings/nodesource.gpg
NODESOURCE_LIST=/etc/apt/sources.list.d/nodesource.list

say() { printf '[%s] INFO: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S')" "$*"; }
fail() { printf '[%s] ERROR: %s\n' "$(date -u '+%Y-%m-%d %H:%M:%S')" "$*" >&2; exit 1; }

# "v20.11.1" -> 20; nothing when there is no node on PATH or it does not run.
installed_node_major() {
  local version
  version="$(node --version 2>/dev/null)" || return 0
  version="${version#v}"
  [[ "$version" =~ ^[0-9]+ ]] && echo "${BASH_REMATCH[0]}"
}

# The major version of the nodejs package apt would install ("18.20.4+dfsg-1~deb12u2" -> 18,
# "1:20.19.2-1" -> 20); nothing when apt offers none.
apt_candidate_node_major() {
  local candidate
  candidate="$(apt-cache policy nodejs 2>/dev/null | awk '/Candidate:/ {print $2; exit}')"
  [[ -n "$candidate" && "$candidate" != "(none)" ]] || return 0
  candidate="${candidate#*:}"
  [[ "$candidate" =~ ^[0-9]+ ]] && echo "${BASH_REMATCH[0]}"
}

# The decision, kept pure for the unit test: installed major, apt's candidate major, minimum.
node_plan() { # installed candidate minimum -> use-installed | install-debian | install-nodesource
  local installed="${1:-0}" candidate="${2:-0}" minimum="$3"
  if ((installed >= minimum)); then echo use-installed
  elif ((candidate >= minimum)); then echo install-debian
  else echo install-nodesource
  fi
}

run_or_show() { # the command, or under --dry-run only its text
  if [[ "$dry_run" == 1 ]]; then printf '[dry-run] %s\n' "$*"; else "$@"; fi
}

install_node_debian() {
  say "Installing Node.js from Debian's own packages (nodejs $1, npm)"
  run_or_show apt-get update -q
  run_or_show env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm
}

install_node_nodesource() {
  say "Installing Node.js ${NODE_MAJOR} from NodeSource (apt repository https://deb.nodesource.com/node_${NODE_MAJOR}.x, key $NODESOURCE_KEY_URL): this Debian's own nodejs is ${1:-not available}, older than ${NODE_MIN_MAJOR}"
  run_or_show apt-get update -q
  run_or_show env DEBIAN_FRONTEND=noninteractive apt-get install -y -q ca-certificates curl gnupg
  run_or_show install -d -m 0755 "$(dirname "$NODESOURCE_KEYRING")"
  if [[ "$dry_run" == 1 ]]; then
    printf '[dry-run] curl -fsSL %s | gpg --dearmor --yes -o %s\n' "$NODESOURCE_KEY_URL" "$NODESOURCE_KEYRING"
    printf '[dry-run] write %s\n' "$NODESOURCE_LIST"
  else
    curl -fsSL --retry 3 "$NODESOURCE_KEY_URL" | gpg --dearmor --yes -o "$NODESOURCE_KEYRING"
    echo "deb [signed-by=$NODESOURCE_KEYRING] https://deb.nodesource.com/node_${NODE_MAJOR}.x nodistro main" >"$NODESOURCE_LIST"
  fi
  run_or_show apt-get update -q
  run_or_show env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs
}

ensure_node() {
  local installed candidate plan
  installed="$(installed_node_major)"
  if [[ -n "$installed" ]] && ((installed >= NODE_MIN_MAJOR)); then return 0; fi
  candidate="$(apt_candidate_node_major)"
  plan="$(node_plan "$installed" "$candidate" "$NODE_MIN_MAJOR")"
  [[ -n "$installed" ]] && say "Node.js ${installed} on PATH is older than ${NODE_MIN_MAJOR}"
  [[ "$dry_run" == 1 || "$(id -u)" == 0 ]] || fail "Node.js ${NODE_MIN_MAJOR}+ is needed and installing it needs root: run sudo $0"
  case "$plan" in
    install-debian) install_node_debian "$candidate" ;;
    install-nodesource) install_node_nodesource "$candidate" ;;
  esac
  if [[ "$dry_run" == 1 ]]; then
    say "Dry run: Node.js is not installed yet, so the rest of the plan cannot be shown; run again without --dry-run"
    exit 0
  fi
  installed="$(installed_node_major)"
  if [[ -z "$installed" ]] || ((installed < NODE_MIN_MAJOR)); then
    fail "Node.js ${NODE_MIN_MAJOR}+ is still not on PATH after the installation (found: ${installed:-none})"
  fi
  say "Node.js $(node --version) installed"
}

ensure_node_modules() {
  local root="$1"
  [[ -x "$root/node_modules/.bin/tsx" ]] && return 0
  command -v npm >/dev/null || fail "npm is missing (needed once to install the toolkit's packages in $root): install npm, or Node.js from NodeSource"
  say "Installing the toolkit's packages: npm ci --omit=dev in $root"
  run_or_show npm ci --omit=dev --no-audit --no-fund --prefix "$root"
}

main() {
  local self root arg
  self="$(readlink -f "${BASH_SOURCE[0]}")"
  root="$(dirname "$(dirname "$self")")"
  dry_run=0
  for arg in "$@"; do
    case "$arg" in
      -n | --dry-run) dry_run=1 ;;
      -h | --help)
        if [[ -z "$(installed_node_major)" || ! -x "$root/node_modules/.bin/tsx" ]]; then
          sed -n '2,10p' "$self" | sed 's/^# \{0,1\}//'
          echo "Full help (options, exit codes, examples) once Node.js is installed: $0 --help"
          exit 0
        fi
        ;;
    esac
  done
  ensure_node
  ensure_node_modules "$root"
  [[ -x "$root/node_modules/.bin/tsx" || "$dry_run" == 0 ]] || { say "Dry run: the toolkit's packages are not installed, so the rest of the plan cannot be shown"; exit 0; }
  exec "$root/scripts/run.sh" setup-droplet "$@"
}

# Sourced by the unit test for its functions; run, it does the work.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
