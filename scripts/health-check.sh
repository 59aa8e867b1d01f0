#!/usr/bin/env bash
# The contract's ./health-check.sh: runs scripts/health-check.ts through run.sh, from anywhere, also via a symlink.
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/run.sh" health-check "$@"
