#!/usr/bin/env bash
# The GitHub deploy key's forced command. In ~deploy/.ssh/authorized_keys (README, "Deploying from
# GitHub"):
#   restrict,command="/opt/toogoodtogo/deployment/scripts/ci-command.sh" ssh-ed25519 AAAA... github-actions-deploy
# sshd then runs this, whatever the client asked for, with the request in SSH_ORIGINAL_COMMAND;
# `restrict` takes away the terminal and every forwarding. The only request allowed is the
# workflow's own: `[.../ci-command.sh] deploy <tag> --yes`, tag v1.2.3 or a 40-hex commit SHA.
# Anything else is refused (exit 126) and nothing runs: a leaked key deploys a release of the
# repository, never a shell in the docker group. The request is split on blanks, never evaluated.
# Run directly (an unrestricted key, or by hand), the arguments are the request.
set -euo pipefail

here="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
# the toolkit is $DEPLOY_DIR/deployment: this file's grandparent is DEPLOY_DIR
deploy_dir="$(dirname "$(dirname "$here")")"

request="${SSH_ORIGINAL_COMMAND-$*}"
refuse() {
  printf 'ci-command: refused "%s": this key may only run "deploy <tag> --yes" (tag v1.2.3 or a 40-character commit SHA)\n' "${request//[^[:print:]]/?}" >&2
  exit 126
}
# One line of printable characters (read below would take the first line only).
[[ "$request" != *[![:print:]]* ]] || refuse
if [[ -n "${SSH_ORIGINAL_COMMAND+set}" ]]; then
  read -r -a words <<<"$SSH_ORIGINAL_COMMAND" || true
else
  words=("$@")
fi
# The workflow quotes each word for a plain shell: 'word' is word (only when quoted whole).
for i in "${!words[@]}"; do
  w="${words[$i]}"
  if [[ "$w" =~ ^\'([^\']*)\'$ ]]; then words[$i]="${BASH_REMATCH[1]}"; fi
done
# The workflow names this script first so that an unrestricted key runs it too.
if [[ ${#words[@]} -gt 0 && "${words[0]}" == */ci-command.sh ]]; then words=("${words[@]:1}"); fi

if [[ ${#words[@]} -ne 3 || "${words[0]}" != deploy || "${words[2]}" != --yes ]] \
  || ! [[ "${words[1]}" =~ ^(v[0-9]+\.[0-9]+\.[0-9]+|[0-9a-f]{40})$ ]]; then
  refuse
fi

DEPLOY_DIR="$deploy_dir" TRIGGERED_BY=github_action exec "$here/deploy.sh" "${words[1]}" --yes
