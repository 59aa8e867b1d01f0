#!/usr/bin/env bash
# Thin wrapper so the contract's `./<name>.sh` works from anywhere, also through a symlink: it
# resolves its own real path and runs the matching .ts file with the toolkit's own tsx.
set -euo pipefail
self="$(readlink -f "${BASH_SOURCE[0]}")"
root="$(dirname "$(dirname "$self")")"
tsx="$root/node_modules/.bin/tsx"
if [[ ! -x "$tsx" ]]; then
  echo "error: $tsx is missing; run 'npm ci' in $root first" >&2
  exit 1
fi
exec "$tsx" "$root/scripts/$(basename "$self" .sh).ts" "$@"
