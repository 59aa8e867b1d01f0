#!/usr/bin/env bash
# Builds the image of one Docker engine of the e2e Swarm (images/swarm-node) on the bed's base.
# Idempotent and cached like provision.sh's images: the image carries a key of its build context
# and of the base, and a warm run only checks that key. Prints the image name on stdout.
#
# Environment: TTG_SWARM_NODE_IMAGE (default ttg-swarm-node:bookworm), and provision.sh's.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE="${TTG_SWARM_NODE_IMAGE:-ttg-swarm-node:bookworm}"
CONTEXT="$BED_DIR/images/swarm-node"
base_id="$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE" 2>/dev/null)" || die "$BASE_IMAGE is missing: provision the bed first (test/e2e/bed/provision.sh)"
key="$(printf '%s %s\n' "$(tree_hash "$CONTEXT")" "$base_id" | sha256sum | cut -c1-16)"
if [[ "$(docker image inspect -f '{{index .Config.Labels "ttg.swarm-node.key"}}' "$IMAGE" 2>/dev/null)" == "$key" ]]; then
  log "swarm node image $IMAGE present"
  echo "$IMAGE"
  exit 0
fi
mkdir -p "$TTG_E2E_CACHE"
log "building $IMAGE (docker.io from the Debian mirror, about a minute when cold)"
# --network host: the build reaches the mirror as provision.sh's monitoring images do.
docker build --network host --build-arg "BASE_IMAGE=$BASE_IMAGE" --label "ttg.swarm-node.key=$key" -t "$IMAGE" "$CONTEXT" \
  >"$TTG_E2E_CACHE/swarm-node-build.log" 2>&1 \
  || { tail -n 30 "$TTG_E2E_CACHE/swarm-node-build.log" >&2; die "docker build of $IMAGE failed (see $TTG_E2E_CACHE/swarm-node-build.log)"; }
echo "$IMAGE"
