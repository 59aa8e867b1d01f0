#!/bin/sh
# The official image renders /etc/nginx/templates/X.template into /etc/nginx/conf.d/X with
# envsubst over every defined variable; gettext is not in the base, so perl does the same for the
# ${NAME} form and leaves nginx's own $variables and undefined names alone.
set -eu
if [ "${1:-}" = nginx ] && [ -d /etc/nginx/templates ]; then
  for template in /etc/nginx/templates/*.template; do
    [ -f "$template" ] || continue
    out="/etc/nginx/conf.d/$(basename "$template" .template)"
    perl -pe 's/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/exists $ENV{$1} ? $ENV{$1} : $&/ge' "$template" >"$out"
    echo "$0: rendered $template to $out"
  done
fi
exec "$@"
