#!/usr/bin/env bash
# The contract's ./restore.sh: runs scripts/restore.ts through run.sh, from anywhere, also via a symlink.
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/run.sh" restore "$@"
