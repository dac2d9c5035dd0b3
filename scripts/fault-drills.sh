#!/usr/bin/env bash
# Fault drills: under a steady write load, break one thing at a time, then check
# the guarantees the way a user would:
#   1. kill -9 the command host and restart it
#   2. stop the broker for a while and restart it
#   3. kill -9 the projection host and restart it
#   4. restart PostgreSQL
#   5. scale out: a second command host and a second projection host join, the
#      writers spread over both command hosts, then one of each is killed -9
#      and not restarted (the survivors carry the load and the partitions)
#   6. replays with two projection hosts: a second projection host shares the
#      partitions while the first replays the read model, three times over;
#      a replay asked of the second meanwhile is refused (409), and after the
#      load every post in the read model equals the fold of its events
#      (runs before 5, which kills the first projection host)
#   7. hot posts on two command hosts: many users like and unlike a few posts
#      through both command hosts at once (every append carries several posts,
#      in whatever order they arrived): no answer is a 5xx, and the read model
#      converges (runs before 5, which kills the second command host)
# Writers send every write with an Idempotency-Key and, when it fails, retry it
# with the same key on a command host chosen afresh, as a careful client does.
# After each drill: every acknowledged write is in the event store (lost = 0),
# no key's write was appended twice (doubled = 0), the read model converges to
# the event store (likes and versions per post, so a double-applied like
# shows), and how long that took.
#
# Loopback only, bounded in time. Runs its own hosts, broker and schemas.
#   DRILL_SECONDS (10)        load before and after each fault
#   DRILL_OUTAGE_SECONDS (5)  how long the broker stays down (the full form is 30)
#   DRILL_WRITERS (4)         concurrent writers
#   DRILLS ("1 2 3 4 5 6 7")  which drills to run (6 and 7 run before 5)
#   DRILL_HOT_REQUESTS (4000) requests of drill 7
#   DRILL_KEEP (unset)        keep the work directory (host and broker logs)
#   SOURCEGRAM_EVENT_STORE    postgres (default) or mongodb: the server the event
#                             store runs on (mongodb: the one services.sh starts)
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
  stop_seconds
  stack_drop_schemas
  stack_down
  if [[ -n "${DRILL_KEEP:-}" ]]; then say "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

stack_up drill
psql_() { psql "$POSTGRES_URL" -qAtX "$@"; }
(cd "$here/.." && cargo build -q -p command-host --example dump_events $([[ $SOURCEGRAM_PROFILE == release ]] && echo --release))
dump="$bin/examples/dump_events"
for i in $(seq 1 50); do "$bin/command-host" mint-token "writer$i"; done >"$work/tokens"
mapfile -t TOKENS <"$work/tokens"
# The command hosts writers spread over (the scale-out drill adds one).
printf 'http://127.0.0.1:%s\n' "$COMMAND_PORT" >"$work/command-hosts"

# One writer: creates a post now and then, likes others' posts; records every
# acknowledged write as "post version". A write that fails (no answer, 5xx, or
# 409 while its first attempt is in doubt) is retried a few times with the same
# Idempotency-Key, each time on a command host picked at random.
writer() { # id stop-file
  local n=$1 stop=$2 posts=() token answer status body post path data key attempt hosts
  RANDOM=$((n * 7919 + $$))
  while [[ ! -f "$stop" ]]; do
    mapfile -t hosts <"$work/command-hosts"
    token=${TOKENS[$((RANDOM % ${#TOKENS[@]}))]}
    key="drill-$n-$EPOCHREALTIME" data=()
    if ((${#posts[@]} == 0 || RANDOM % 4 == 0)); then
      path=/posts data=(-H 'Content-Type: application/json' -d '{"message":"drill"}')
    else
      path="/posts/${posts[$((RANDOM % ${#posts[@]}))]}/likes"
    fi
    status=000
    for attempt in 1 2 3 4 5; do
      answer=$(curl -s -m 5 -w '\n%{http_code}' -X POST "${hosts[$((RANDOM % ${#hosts[@]}))]}$path" \
        -H "Authorization: Bearer $token" -H "Idempotency-Key: $key" "${data[@]}" 2>/dev/null) || answer=$'\n000'
      status=${answer##*$'\n'}
      [[ "$status" == 000 || "$status" == 5* || "$status" == 409 ]] || break
      sleep "0.$((attempt * 2))"
    done
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

# The event store as a PostgreSQL table, whichever store the stack runs on
# (SOURCEGRAM_EVENT_STORE): the checks below are queries over it.
snapshot_store() {
  PGOPTIONS="-c client_min_messages=warning" psql_ -c "CREATE TABLE IF NOT EXISTS $schema.store_events (stream_id uuid, version bigint,
              event_type text, liker text, actor text, idempotency_key text); TRUNCATE $schema.store_events"
  "$dump" "$EVENT_STORE_URL" >"$work/store.tsv"
  psql_ -c "\\copy $schema.store_events FROM '$work/store.tsv'"
}

# Every acknowledged (post, version) is in the event store.
lost_writes() {
  cat "$work"/acked.* 2>/dev/null | sort -u >"$work/acked"
  psql_ <<SQL | tail -1
CREATE TEMP TABLE acked (stream_id uuid, version bigint);
\copy acked FROM '$work/acked' WITH (DELIMITER ' ')
SELECT count(*) FROM acked a WHERE NOT EXISTS
  (SELECT 1 FROM $schema.store_events e WHERE e.stream_id = a.stream_id AND e.version = a.version);
SQL
}

# Per post in the event store: its version, and its likes (the likers whose
# latest like or unlike is a like).
store_posts_sql="
  WITH latest AS (
    SELECT DISTINCT ON (stream_id, liker) stream_id, event_type FROM \$schema.store_events
    WHERE event_type IN ('PostLiked', 'PostUnliked') ORDER BY stream_id, liker, version DESC),
  liked AS (
    SELECT stream_id, count(*) FILTER (WHERE event_type = 'PostLiked') AS likes FROM latest GROUP BY stream_id)
  SELECT e.stream_id, max(e.version) AS version, coalesce(max(l.likes), 0) AS likes
  FROM \$schema.store_events e LEFT JOIN liked l USING (stream_id) GROUP BY e.stream_id"

# Posts whose read-model row differs from the event store: version behind, or
# likes not equal to the likes the events imply (a double-applied like shows here).
diverging_posts() {
  psql_ -c "
    WITH store AS (${store_posts_sql//\$schema/$schema})
    SELECT count(*) FROM store s LEFT JOIN ${schema}_rm.posts p ON p.id = s.stream_id
    WHERE p.id IS NULL OR p.version <> s.version OR p.likes <> s.likes"
}

# How long the read model took to equal the event store ("N s"), polled for
# up to 180 s; "no" if it never did.
time_to_converge() {
  local started=$SECONDS
  while ((SECONDS - started < 180)); do
    snapshot_store >/dev/null
    if [[ "$(diverging_posts)" == 0 ]]; then echo "$((SECONDS - started)) s"; return; fi
    sleep 0.5
  done
  echo no
}

# Idempotency keys whose write was appended more than once.
doubled_writes() {
  psql_ -c "
    SELECT count(*) FROM (SELECT 1 FROM $schema.store_events WHERE idempotency_key IS NOT NULL
                          GROUP BY actor, idempotency_key HAVING count(*) > 1) d"
}

double_applied() {
  psql_ -c "
    WITH store AS (${store_posts_sql//\$schema/$schema})
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
  local converged; converged=$(time_to_converge)
  results+=("| $name | $acked | $(lost_writes) | $(doubled_writes) | $(double_applied) | $converged |")
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

# A second host of a kind, beside the one up.sh started, on the same stores,
# broker and consumer groups (what stack_up exported, and what up.sh sets for
# its own hosts), with a port and an instance id of its own.
start_second() { # name port
  local pidfile="$SOURCEGRAM_STATE_DIR/hosts/$1-2.pid"
  [[ -f "$pidfile" ]] && alive "$(cat "$pidfile")" && return 0
  LISTEN_ADDR="127.0.0.1:$2" PROJECTION_INSTANCE_ID="drill-$1-2" KAFKA_BROKERS="$KAFKA_BROKERS" \
    READ_MODEL_URL="$POSTGRES_URL" nohup "$bin/$1" >>"$SOURCEGRAM_STATE_DIR/hosts/$1-2.log" 2>&1 &
  echo $! >"$pidfile"
  disown # killed on purpose later: no job notice
  local probe=healthz; [[ "$1" == projection-host ]] && probe=readyz
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$2/$probe" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  say "the second $1 did not come up"; tail -20 "$SOURCEGRAM_STATE_DIR/hosts/$1-2.log" >&2; return 1
}
scale_out() {
  start_second command-host "$SECOND_COMMAND_PORT"
  start_second projection-host "$SECOND_PROJECTION_PORT"
  printf 'http://127.0.0.1:%s\n' "$COMMAND_PORT" "$SECOND_COMMAND_PORT" >"$work/command-hosts"
}
# One command host and one projection host die and stay down: writers fail
# over to the other command host, and the other projection host takes over the
# dead one's partitions once the group expires it.
kill_one_of_each() {
  local pid
  for pid in "$(host_pid command-host-2)" "$(host_pid projection-host)"; do
    kill -9 "$pid"
    gone "$pid"
  done
}
# Replays on the first projection host while the second projects live events
# into the same tables. While one runs, the second host refuses another.
replays_beside_a_second_projection_host() {
  local i answer
  for i in 1 2 3; do
    answer=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $ADMIN_TOKEN" \
      "http://127.0.0.1:$PROJECTION_PORT/admin/replay")
    [[ "$answer" == 202 ]] || { say "replay $i was refused ($answer)"; return 1; }
    answer=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer $ADMIN_TOKEN" \
      "http://127.0.0.1:$SECOND_PROJECTION_PORT/admin/replay")
    # The first may have finished already on a small store; then 202 is right,
    # and the first must be over by now.
    if [[ "$answer" == 202 ]]; then
      replay_state "$PROJECTION_PORT" running && { say "two replays ran at once"; return 1; }
      wait_for_replay "$SECOND_PROJECTION_PORT" || return 1
    elif [[ "$answer" != 409 ]]; then
      say "the second host answered $answer to a replay while one ran"; return 1
    fi
    wait_for_replay "$PROJECTION_PORT" || return 1
  done
}
replay_state() { # port state: is the replay that host runs in that state?
  curl -sS -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$1/admin/replay" | grep -q "\"state\":\"$2\""
}
wait_for_replay() { # port
  for _ in $(seq 1 1200); do
    replay_state "$1" running || break
    sleep 0.1
  done
  replay_state "$1" succeeded && return 0
  say "the replay on port $1 did not succeed: $(curl -sS -H "Authorization: Bearer $ADMIN_TOKEN" \
    "http://127.0.0.1:$1/admin/replay")"
  return 1
}
# Drill 7: likes and unlikes of 20 hot posts by 400 users, 32 at a time, spread
# over both command hosts, sent once each (no retries): every answer is 2xx
# or a refusal the rules give, never a 5xx; afterwards the read model
# converges to the event store.
hot_posts_on_two_command_hosts() {
  local posts=() i host post user verb codes total server_errors converged
  start_second command-host "$SECOND_COMMAND_PORT"
  for i in $(seq 1 20); do
    posts+=("$(curl -sS -X POST "http://127.0.0.1:$COMMAND_PORT/posts" -H "Authorization: Bearer ${TOKENS[0]}" \
      -H 'Content-Type: application/json' -d '{"message":"hot"}' | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')")
  done
  "$bin/command-host" mint-token hot --count 400 >"$work/hot-tokens"
  mapfile -t hot <"$work/hot-tokens"
  RANDOM=7
  for i in $(seq 1 "${DRILL_HOT_REQUESTS:-4000}"); do
    host=$COMMAND_PORT; ((RANDOM % 2)) && host=$SECOND_COMMAND_PORT
    post=${posts[$((RANDOM % 20))]} user=${hot[$((RANDOM % 400))]}
    verb=POST; ((RANDOM % 4 == 0)) && verb=DELETE
    # `next` starts each request afresh, options and all.
    ((i > 1)) && echo next
    printf 'url = "http://127.0.0.1:%s/posts/%s/likes"\nrequest = "%s"\nheader = "Authorization: Bearer %s"\n' \
      "$host" "$post" "$verb" "$user"
    printf 'silent\nmax-time = 30\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n'
  done >"$work/hot.curl"
  curl -s -Z --parallel-max 32 -K "$work/hot.curl" >"$work/hot.codes" 2>"$work/hot.curl-log" || true
  total=$(grep -c . "$work/hot.codes" || true)
  server_errors=$(grep -c -e '^5' -e '^000' "$work/hot.codes" || true)
  codes=$(sort "$work/hot.codes" | uniq -c | awk '{printf "%s×%s ", $2, $1}')
  say "hot posts: $total answers: $codes"
  converged=$(time_to_converge)
  hot_row="| hot posts on two command hosts | $total | $server_errors | $converged |"
  [[ "$server_errors" == 0 && "$total" -gt 0 && "$converged" != no ]]
}
stop_seconds() {
  local pidfile
  for pidfile in "$SOURCEGRAM_STATE_DIR"/hosts/*-2.pid; do
    [[ -f "$pidfile" ]] || continue
    alive "$(cat "$pidfile")" && kill -TERM "$(cat "$pidfile")"
    rm -f "$pidfile"
  done
}
SECOND_COMMAND_PORT=$((COMMAND_PORT + 10))
SECOND_PROJECTION_PORT=$((PROJECTION_PORT + 10))

DRILLS="${DRILLS:-1 2 3 4 5 6 7}"
hot_row="" hot_failed=0
[[ " $DRILLS " == *" 1 "* ]] && drill "kill -9 command host" kill_command_host
[[ " $DRILLS " == *" 2 "* ]] && drill "broker down ${OUTAGE_SECONDS}s" broker_outage
[[ " $DRILLS " == *" 3 "* ]] && drill "kill -9 projection host" kill_projection_host
[[ " $DRILLS " == *" 4 "* ]] && drill "restart PostgreSQL" restart_postgres
if [[ " $DRILLS " == *" 6 "* ]]; then
  start_second projection-host "$SECOND_PROJECTION_PORT"
  drill "replays beside a second projection host" replays_beside_a_second_projection_host
fi
if [[ " $DRILLS " == *" 7 "* ]]; then
  say "drill: hot posts on two command hosts"
  hot_posts_on_two_command_hosts || hot_failed=1
fi
if [[ " $DRILLS " == *" 5 "* ]]; then
  scale_out
  drill "2+2 hosts, kill -9 one of each" kill_one_of_each
fi

echo
echo "| drill | writes acknowledged | writes lost | writes doubled | posts double-applied | converged after load |"
echo "| --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${results[@]}"
if [[ -n "$hot_row" ]]; then
  echo
  echo "| drill | requests answered | answers 5xx or none | converged after load |"
  echo "| --- | --- | --- | --- |"
  echo "$hot_row"
fi
failed=$hot_failed
for row in "${results[@]}"; do
  IFS='|' read -r _ _ _ lost doubled double converged _ <<<"$row"
  if [[ "${lost// /}" != 0 || "${doubled// /}" != 0 || "${double// /}" != 0 || "${converged// /}" == no ]]; then failed=1; fi
done
exit "$failed"
