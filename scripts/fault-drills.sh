#!/usr/bin/env bash
# Fault drills: under a steady write load, break one thing at a time, then check
# the guarantees the way a user would:
#   1. kill -9 the command host and restart it
#   2. stop the broker for a while and restart it
#   3. kill -9 the projection host and restart it
#   4. restart PostgreSQL
# After each drill: every acknowledged write is in the event store (lost = 0),
# the read model converges to the event store (likes and versions per post, so a
# double-applied like shows), and how long that took.
#
# Loopback only, bounded in time. Runs its own hosts, broker and schemas.
#   DRILL_SECONDS (10)        load before and after each fault
#   DRILL_OUTAGE_SECONDS (5)  how long the broker stays down (the full form is 30)
#   DRILL_WRITERS (4)         concurrent writers
#   DRILLS ("1 2 3 4")        which drills to run
#   DRILL_KEEP (unset)        keep the work directory (host and broker logs)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"
LOAD_SECONDS="${DRILL_SECONDS:-10}"
OUTAGE_SECONDS="${DRILL_OUTAGE_SECONDS:-5}"
WRITERS="${DRILL_WRITERS:-4}"
stack_init "${DRILL_KAFKA_PORT:-19094}" 18281
say() { printf 'drills: %s\n' "$*" >&2; }
trap 'say "failed at line $LINENO: $BASH_COMMAND"' ERR

cleanup() {
  # Writers still running (a drill failed midway) must not outlive the drill.
  touch "$work/stop"
  kill $(jobs -p) 2>/dev/null || true
  stack_drop_schemas
  stack_down
  if [[ -n "${DRILL_KEEP:-}" ]]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

stack_up drill
psql_() { psql "$POSTGRES_URL" -qAtX "$@"; }
for i in $(seq 1 50); do "$bin/command-host" mint-token "writer$i"; done >"$work/tokens"
mapfile -t TOKENS <"$work/tokens"
CMD="http://127.0.0.1:$COMMAND_PORT"

# One writer: creates a post now and then, likes others' posts; records every
# acknowledged write as "post version".
writer() { # id stop-file
  local n=$1 stop=$2 posts=() token answer status body post
  RANDOM=$((n * 7919 + $$))
  while [[ ! -f "$stop" ]]; do
    token=${TOKENS[$((RANDOM % ${#TOKENS[@]}))]}
    if ((${#posts[@]} == 0 || RANDOM % 4 == 0)); then
      answer=$(curl -s -m 5 -w '\n%{http_code}' -X POST "$CMD/posts" -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/json' -d '{"message":"drill"}' 2>/dev/null) || { sleep 0.05; continue; }
    else
      post=${posts[$((RANDOM % ${#posts[@]}))]}
      answer=$(curl -s -m 5 -w '\n%{http_code}' -X POST "$CMD/posts/$post/likes" \
        -H "Authorization: Bearer $token" 2>/dev/null) || { sleep 0.05; continue; }
    fi
    status=${answer##*$'\n'}
    body=${answer%$'\n'*}
    if [[ "$status" == 2* ]]; then
      post=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' <<<"$body")
      echo "$post $(sed -n 's/.*"version":\([0-9]*\).*/\1/p' <<<"$body")" >>"$work/acked.$n"
      [[ "$status" == 201 ]] && posts+=("$post")
    fi
  done
}

start_load() {
  rm -f "$work/stop"
  for n in $(seq 1 "$WRITERS"); do writer "$n" "$work/stop" & done
}
stop_load() { touch "$work/stop"; wait; }

host_pid() { cat "$SOURCEGRAM_STATE_DIR/hosts/$1.pid"; }

# Every acknowledged (post, version) is in the event store.
lost_writes() {
  cat "$work"/acked.* 2>/dev/null | sort -u >"$work/acked"
  psql_ <<SQL | tail -1
CREATE TEMP TABLE acked (stream_id uuid, version bigint);
\copy acked FROM '$work/acked' WITH (DELIMITER ' ')
SELECT count(*) FROM acked a WHERE NOT EXISTS
  (SELECT 1 FROM $schema.events e WHERE e.stream_id = a.stream_id AND e.version = a.version);
SQL
}

# Posts whose read-model row differs from the event store: version behind, or
# likes not equal to the likes the events imply (a double-applied like shows here).
diverging_posts() {
  psql_ -c "
    WITH store AS (
      SELECT stream_id,
             max(version) AS version,
             count(DISTINCT data->>'user') FILTER (WHERE event_type = 'PostLiked') AS likes
      FROM $schema.events GROUP BY stream_id)
    SELECT count(*) FROM store s LEFT JOIN ${schema}_rm.posts p ON p.id = s.stream_id
    WHERE p.id IS NULL OR p.version <> s.version OR p.likes <> s.likes"
}

double_applied() {
  psql_ -c "
    WITH store AS (
      SELECT stream_id, count(DISTINCT data->>'user') FILTER (WHERE event_type = 'PostLiked') AS likes
      FROM $schema.events GROUP BY stream_id)
    SELECT count(*) FROM store s JOIN ${schema}_rm.posts p ON p.id = s.stream_id WHERE p.likes > s.likes"
}

results=()
drill() { # name fault-function
  local name=$1 fault=$2
  say "drill: $name"
  start_load
  sleep "$LOAD_SECONDS"
  "$fault"
  sleep "$LOAD_SECONDS"
  stop_load
  local acked; acked=$(cat "$work"/acked.* 2>/dev/null | wc -l)
  local started=$SECONDS converged="no" left
  while ((SECONDS - started < 180)); do
    left=$(diverging_posts)
    if [[ "$left" == 0 ]]; then converged="$((SECONDS - started)) s"; break; fi
    sleep 0.5
  done
  results+=("| $name | $acked | $(lost_writes) | $(double_applied) | $converged |")
  rm -f "$work"/acked.*
}

gone() { # pid: waits until the process is really gone
  for _ in $(seq 1 100); do alive "$1" || return 0; sleep 0.1; done
  say "process $1 outlived kill -9"; return 1
}
kill_command_host() {
  local pid; pid=$(host_pid command-host)
  kill -9 "$pid"
  gone "$pid"
  "$here/up.sh" >/dev/null
}
broker_outage() {
  "$here/services.sh" stop-broker >/dev/null
  sleep "$OUTAGE_SECONDS"
  "$here/services.sh" start >/dev/null
}
kill_projection_host() {
  local pid; pid=$(host_pid projection-host)
  kill -9 "$pid"
  gone "$pid"
  "$here/up.sh" >/dev/null
}
restart_postgres() {
  pg_ctlcluster --skip-systemctl-redirect 15 main restart
}

DRILLS="${DRILLS:-1 2 3 4}"
[[ " $DRILLS " == *" 1 "* ]] && drill "kill -9 command host" kill_command_host
[[ " $DRILLS " == *" 2 "* ]] && drill "broker down ${OUTAGE_SECONDS}s" broker_outage
[[ " $DRILLS " == *" 3 "* ]] && drill "kill -9 projection host" kill_projection_host
[[ " $DRILLS " == *" 4 "* ]] && drill "restart PostgreSQL" restart_postgres

echo
echo "| drill | writes acknowledged | writes lost | posts double-applied | converged after load |"
echo "| --- | --- | --- | --- | --- |"
printf '%s\n' "${results[@]}"
failed=0
for row in "${results[@]}"; do
  IFS='|' read -r _ _ _ lost double converged _ <<<"$row"
  if [[ "${lost// /}" != 0 || "${double// /}" != 0 || "${converged// /}" == no ]]; then failed=1; fi
done
exit "$failed"
