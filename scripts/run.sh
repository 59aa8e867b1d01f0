#!/usr/bin/env bash
# run.sh <script> [args...]: runs scripts/<script>.ts with the toolkit's own tsx. The contract's
# wrappers (deploy.sh, backup.sh, ...) call it; it resolves its own real path, so they work from
# anywhere, also through a symlink.
set -euo pipefail
root="$(dirname "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")")"
tsx="$root/node_modules/.bin/tsx"
if [[ ! -x "$tsx" ]]; then
  echo "error: $tsx is missing; run 'npm ci' in $root first" >&2
  exit 1
fi
script="$1"
shift
exec "$tsx" "$root/scripts/$script.ts" "$@"
