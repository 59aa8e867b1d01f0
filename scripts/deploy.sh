#!/usr/bin/env bash
# The contract's ./deploy.sh: runs scripts/deploy.ts through run.sh, from anywhere, also via a symlink.
exec "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/run.sh" deploy "$@"
