#!/usr/bin/env bash
# status.sh [--json]: runs scripts/status.ts through run.sh, from anywhere, also via a symlink.
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/run.sh" status "$@"
