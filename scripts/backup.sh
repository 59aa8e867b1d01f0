#!/usr/bin/env bash
# The contract's ./backup.sh: runs scripts/backup.ts through run.sh, from anywhere, also via a symlink.
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/run.sh" backup "$@"
