#!/usr/bin/env bash
# The contract's ./rollback.sh: runs scripts/rollback.ts through run.sh, from anywhere, also via a symlink.
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/run.sh" rollback "$@"
