#!/usr/bin/env bash
# run.sh <script> [args...]: runs scripts/<script>.ts with the toolkit's own tsx. The contract's
# wrappers (deploy.sh, backup.sh, ...) and setup-droplet.sh call it; it resolves its own real path,
# so they work from anywhere, also through a symlink.
set -euo pipefail
root="$(dirname "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")")"
if [[ ! -d "$root/node_modules/tsx" ]]; then
  echo "error: $root/node_modules/tsx is missing; run 'npm ci' in $root first" >&2
  exit 1
fi
script="$1"
shift
# Node reads `--env-file FILE` anywhere on its command line, even after the script, and exits 9
# ("node: FILE: not found") before the script runs when FILE is missing; a `--` in front of the
# script's arguments ends that scan, and lib/core/cli.ts takes it off again.
# node with tsx's loader, not the tsx launcher: one process less (about 40 MB) for every run.
# A 1 MB young generation collects the pipe buffers of a streamed dump soon after they are used:
# about 25 MB less at the peak of a backup; the extra collections (about a second of CPU on a 1 GB
# backup) did not change its wall time.
exec node --max-semi-space-size=1 --import "$root/node_modules/tsx/dist/loader.mjs" "$root/scripts/$script.ts" -- "$@"
