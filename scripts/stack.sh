#!/usr/bin/env bash
# stack.sh up|start|stop [service...]: runs scripts/stack.ts through run.sh, from anywhere, also via a symlink.
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/run.sh" stack "$@"
