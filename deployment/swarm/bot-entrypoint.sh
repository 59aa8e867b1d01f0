#!/bin/sh
# The bot's entrypoint on a Swarm (docker-stack.yml mounts it as a config; the image's command is
# passed as arguments). Two things a container of the image does not do by itself:
# - the token and the database URL come from Swarm secrets, into this process's environment
#   only, never into the service's spec;
# - on SIGTERM the bot keeps serving for BOT_DRAIN_SECONDS before it gets the signal (webhook
#   mode; 0 in polling mode, where the next poller waits for this one). Swarm takes a task out of
#   service discovery 2 s before it stops it, and nginx caches the bot's addresses for 5 s
#   (resolver valid=5s): without the wait, a request nginx sends in those seconds, or one in
#   flight when the bot exits, fails.
set -u
TELEGRAM_BOT_TOKEN="$(cat /run/secrets/telegram_bot_token)" || exit 1
DATABASE_URL="$(cat /run/secrets/database_url)" || exit 1
export TELEGRAM_BOT_TOKEN DATABASE_URL
"$@" &
bot=$!
trap 'sleep "${BOT_DRAIN_SECONDS:-0}"; kill -TERM "$bot" 2>/dev/null' TERM INT
wait "$bot"
status=$?
# wait returns early (above 128) when the trap ran: wait again for the bot's own exit.
if [ "$status" -gt 128 ] && kill -0 "$bot" 2>/dev/null; then
  wait "$bot"
  status=$?
fi
exit "$status"
