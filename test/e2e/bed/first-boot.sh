#!/usr/bin/env bash
# Puts the bed's dockerd back in the state of a machine that boots it for the first time, then
# provisions again: stops dockerd, deletes its network store and the docker0 interface, starts it.
# On such a boot the default bridge's IPAM lists no Gateway until the daemon restarts
# (moby/moby#26799); CI on a machine that has run the suite before never sees that. Run the e2e
# tier (or .ci/run) after this to test a fresh machine. Containers of running stacks are stopped.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ "$(id -u)" == 0 ]] || die "must run as root (stops and starts dockerd)"
case "${1:-}" in
  "") ;;
  -h | --help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown argument: $1 (try --help)" ;;
esac

if pgrep -x dockerd >/dev/null; then
  log "stopping dockerd"
  pkill -x dockerd
  for _ in $(seq 1 60); do pgrep -x dockerd >/dev/null || break; sleep 0.5; done
  pgrep -x dockerd >/dev/null && die "dockerd did not stop"
fi
rm -f "$DOCKERD_PIDFILE" /var/lib/docker/network/files/local-kv.db
if ip link show docker0 >/dev/null 2>&1; then ip link delete docker0; fi
log "dockerd's network store and docker0 removed: provisioning as on a first boot"
bash "$BED_DIR/provision.sh"
gateway="$(docker network inspect bridge --format '{{(index .IPAM.Config 0).Gateway}}')"
log "default bridge IPAM Gateway now: '${gateway}' (empty on a first boot)"
