#!/usr/bin/env bash
# Every benchmark in one run, each next to a raw baseline measured in the same
# run on the same machine (these machines are shared and noisy, so only ratios
# mean anything):
#
#   command host  create-post and like commands/s   vs  pgbench single-row inserts/s
#                 (and create-post with publishing held back, a diagnostic)
#   query host    GET /posts/{id}, GET /posts        vs  pgbench point selects/s
#   replay        events/s rebuilt                   vs  COPY rows/s of the same rows
#   outbox        (baseline only) broker produce msgs/s with the relay's settings
#   command host  like again (a no-op: the user already likes the post), which
#                 reads the store to confirm, vs pgbench point selects/s
#   FerretDB      create and like commands/s and replay events/s with the event
#                 store on FerretDB (MongoDB's wire protocol), vs the same baselines
#   live pipeline lag p99 (command to projection) at half and a quarter of the
#                 create rate (creates on a fixed schedule), and at a low rate;
#                 and likes from distinct users on one hot post
#   hot post      likes on one post from distinct users vs likes spread over
#                 many posts, same host, same run; the first command after a
#                 restart on a post of 1,000,000 events, from its snapshot, and
#                 the command host's RSS after it
#
# `scripts/bench.sh scale` runs the data-scale benchmark instead
# (scripts/bench-scale.sh): 10k, 100k and 1M posts, each query's p50/p99 next
# to pgbench's point select, the replay's rate and RSS, the store's size.
#
# Each host runs alone during its own load, as its baseline does.
# Prints one Markdown table. Loopback only; every load is bounded in time.
#   BENCH_SECONDS (10)  length of each load
#   BENCH_REPLAY_EVENTS (200000)  events generated for the replay benchmark
#   BENCH_LIVE_LOW_RATE (200)  the second, low rate of the live-pipeline run
#   BENCH_PARTITIONS (3)  partitions of the benchmark's topics, as scripts/services.sh
#   BENCH_HOT_RATE (2000)  likes/s on the one hot post in the live run (each from a user of its own)
#   BENCH_BIG_POST (1000000)  events of the post loaded after a restart
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"
root="$here/.."
[[ "${1:-}" == scale ]] && exec "$here/bench-scale.sh"
SECONDS_EACH="${BENCH_SECONDS:-10}"
REPLAY_EVENTS="${BENCH_REPLAY_EVENTS:-200000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sourcegram/target}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  SOURCEGRAM_STATE_DIR="$work/state" SOURCEGRAM_KAFKA_PORT="${BENCH_KAFKA_PORT:-19092}" "$here/services.sh" stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf 'bench: %s\n' "$*" >&2; }

command -v wrk >/dev/null || { say "installing wrk"; apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; }
# A broker of this run's own (own data, own ports: the controller takes the
# port after the broker's): a benchmark's messages must not slow the
# developer's broker, nor the developer's traffic the benchmark.
export SOURCEGRAM_STATE_DIR="$work/state" SOURCEGRAM_KAFKA_PORT="${BENCH_KAFKA_PORT:-19092}"
export SOURCEGRAM_KAFKA_CONTROLLER_PORT="$((SOURCEGRAM_KAFKA_PORT + 1))"
eval "$("$here/services.sh" start)"
say "building release binaries"
(cd "$root" && cargo build --release -q -p command-host -p projection-host -p query-host --bins --example produce_rate --example dump_events)
bin="$CARGO_TARGET_DIR/release"

schema="bench_$(date +%s)"
psql_() { psql "$POSTGRES_URL" -qAtX "$@"; }
psql_ -c "CREATE SCHEMA $schema"
store_url="$POSTGRES_URL?options=-csearch_path%3D$schema"
topic="bench-$schema"
partitions="${BENCH_PARTITIONS:-3}"
create_topic "$topic" "$partitions"

# wrk's output: requests/s, p99 in ms, and non-2xx count.
wrk_run() { # connections url script -> "rps p99ms errors"
  local out; out=$(wrk -t2 -c"$1" -d"${SECONDS_EACH}s" --latency -s "$3" "$2")
  local rps p99 errors
  rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.1f", v}' <<<"$out")
  errors=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "$rps $p99 ${errors:-0}"
}
pgbench_tps() { # clients script
  pgbench -n -c "$1" -j 2 -T "$SECONDS_EACH" -f "$2" "$POSTGRES_URL" 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}'
}

# --- baselines --------------------------------------------------------------
say "baseline: pgbench single-row inserts"
psql_ -c "CREATE TABLE $schema.pgb_events (stream_id uuid, version bigint, data jsonb, PRIMARY KEY (stream_id, version))"
echo "INSERT INTO $schema.pgb_events VALUES (gen_random_uuid(), 1, '{\"user\":\"alice\"}');" >"$work/insert.sql"
insert_tps=$(pgbench_tps 16 "$work/insert.sql")

say "baseline: pgbench point selects"
psql_ -c "CREATE TABLE $schema.pgb_posts (n int PRIMARY KEY, id uuid, author text, message text, likes int, created_at timestamptz, version bigint);
          INSERT INTO $schema.pgb_posts SELECT n, gen_random_uuid(), 'alice', 'benchmark post', 0, now(), 1 FROM generate_series(1, 10000) n"
printf '\\set n random(1, 10000)\nSELECT * FROM %s.pgb_posts WHERE n = :n;\n' "$schema" >"$work/select.sql"
select_tps=$(pgbench_tps 64 "$work/select.sql")

say "baseline: broker produce"
create_topic "$topic-raw" "$partitions"
produce_rate=$("$bin/examples/produce_rate" "$KAFKA_BROKERS" "$topic-raw" 50000)

# --- hosts ------------------------------------------------------------------
# Each host is measured on its own, like its baseline: nothing else of
# Sourcegram runs during a host's load. The live pipeline is measured last,
# with the command host and the projection host together.
export TOKEN_SECRET="bench-secret-$RANDOM" ADMIN_TOKEN="bench-admin-$RANDOM"
metric() { # port name -> value
  curl -fsS "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2}'
}

# Enough users that every like on the hot post comes from a user of its own.
# The closed-loop hot-post load needs one for each like it sends.
hot_rate="${BENCH_HOT_RATE:-2000}"
users=$(( 8000 * (SECONDS_EACH + 2) ))
"$bin/command-host" mint-token user --count "$users" >"$work/tokens"
cat >"$work/load.lua" <<'LUA'
local tokens, ids = {}, {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local f = os.getenv("IDS") and io.open(os.getenv("IDS"))
if f then f:close(); for line in io.lines(os.getenv("IDS")) do ids[#ids + 1] = line end end
local mode = os.getenv("MODE")
local hot = os.getenv("HOT")
-- Each of wrk's threads walks the tokens from its own offset, so that on the
-- hot post every like comes from a user of its own.
local made = 0
setup = function(thread) thread:set("thread_id", made); made = made + 1 end
-- Each thread its own random sequence: unseeded, both would send the same
-- requests in the same order, and every other like would repeat one.
init = function(args) math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919) end
local sent = 0
-- RATE: requests per second in all, sent on a fixed schedule (open loop).
-- Each of wrk's two threads takes every other slot of the schedule; a
-- response frees its connection for the next free slot, so a slow response
-- does not push the following requests back, as it would with a fixed pause
-- per connection (which lowers the load exactly when the system is slow, and
-- hides the tail that real, independent clients would see).
local rate = tonumber(os.getenv("RATE") or "0")
if rate > 0 then
  local ffi = require("ffi")
  ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
             int clock_gettime(int clock, bench_timespec *ts); ]]
  local ts = ffi.new("bench_timespec")
  local function now_ms()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
  local period, next_at = 2 * 1000 / rate, nil
  delay = function()
    local now = now_ms()
    next_at = math.max((next_at or now) + period, now)
    return next_at - now
  end
end
request = function()
  local token = tokens[math.random(#tokens)]
  if mode == "create" then
    return wrk.format("POST", "/posts", {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, '{"message":"benchmark post"}')
  elseif mode == "like" then
    return wrk.format("POST", "/posts/" .. ids[math.random(#ids)] .. "/likes", {["Authorization"] = "Bearer " .. token})
  elseif mode == "relike" then
    -- 50 users on 20 posts: after the first second every like is a no-op.
    return wrk.format("POST", "/posts/" .. ids[math.random(20)] .. "/likes", {["Authorization"] = "Bearer " .. tokens[math.random(50)]})
  elseif mode == "hot" then
    sent = sent + 1
    local user = tokens[((sent - 1) * 2 + (thread_id or 0)) % #tokens + 1]
    return wrk.format("POST", "/posts/" .. hot .. "/likes", {["Authorization"] = "Bearer " .. user})
  elseif mode == "get" then
    return wrk.format("GET", "/posts/" .. ids[math.random(#ids)])
  else
    return wrk.format("GET", "/posts?limit=20")
  end
end
LUA
export TOKENS="$work/tokens" IDS="$work/ids"

start_host command-host 18081 EVENT_STORE_URL="$store_url" RECORDS_URL="$store_url" KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic" PG_POOL_SIZE=32
say "command host: create post"
read -r create_rps create_p99 create_err < <(MODE=create wrk_run 32 http://127.0.0.1:18081 "$work/load.lua")
psql_ -c "SELECT DISTINCT stream_id FROM $schema.events LIMIT 2000" >"$work/ids"
before=$(psql_ -c "SELECT count(*) FROM $schema.events")
say "command host: like"
read -r like_rps like_p99 like_err < <(MODE=like wrk_run 32 http://127.0.0.1:18081 "$work/load.lua")
appended=$(( $(psql_ -c "SELECT count(*) FROM $schema.events") - before ))
say "command host: like, all on one hot post (each from a user of its own)"
HOT=$(psql_ -c "SELECT stream_id FROM $schema.events ORDER BY position LIMIT 1")
export HOT
batches_before=$(metric 18081 sourcegram_write_batches_total) commands_before=$(metric 18081 sourcegram_batched_commands_total)
before_hot=$(psql_ -c "SELECT count(*) FROM $schema.events WHERE stream_id = '$HOT'")
read -r hotc_rps hotc_p99 hotc_err < <(MODE=hot wrk_run 32 http://127.0.0.1:18081 "$work/load.lua")
hotc_appended=$(( $(psql_ -c "SELECT count(*) FROM $schema.events WHERE stream_id = '$HOT'") - before_hot ))
hotc_batch=$(awk -v c="$(( $(metric 18081 sourcegram_batched_commands_total) - commands_before ))" \
  -v b="$(( $(metric 18081 sourcegram_write_batches_total) - batches_before ))" 'BEGIN { if (b > 0) printf "%.1f", c / b; else print "n/a" }')
say "command host: like again (no-ops)"
MODE=relike wrk_run 32 http://127.0.0.1:18081 "$work/load.lua" >/dev/null # every (user, post) liked once
before_relike=$(psql_ -c "SELECT count(*) FROM $schema.events")
read -r relike_rps relike_p99 relike_err < <(MODE=relike wrk_run 32 http://127.0.0.1:18081 "$work/load.lua")
relike_appended=$(( $(psql_ -c "SELECT count(*) FROM $schema.events") - before_relike ))
published=$(metric 18081 sourcegram_events_published_total)
total=$(psql_ -c "SELECT count(*) FROM $schema.events")
stop_last_host

# The same create load with publishing held back: this host's relay points at a
# port where no broker listens, so its events wait in the outbox (of a schema of
# their own). Not a figure of the system, which publishes as it writes; it shows
# what the broker and the relay, sharing the machine's cores, cost the write path.
psql_ -c "CREATE SCHEMA ${schema}_held"
held_url="$POSTGRES_URL?options=-csearch_path%3D${schema}_held"
start_host command-host 18084 EVENT_STORE_URL="$held_url" RECORDS_URL="$held_url" KAFKA_BROKERS=127.0.0.1:1 KAFKA_TOPIC="$topic" PG_POOL_SIZE=32
say "command host: create post, publishing held back"
read -r held_rps held_p99 held_err < <(MODE=create wrk_run 32 http://127.0.0.1:18084 "$work/load.lua")
stop_last_host

# The query load needs the whole read model: a replay builds it from the event
# store. This projection host listens to a topic nobody writes to, so it does
# nothing but replays.
create_topic "$topic-idle" 1
start_host projection-host 18083 EVENT_STORE_URL="$store_url" READ_MODEL_URL="$POSTGRES_URL" READ_MODEL_SCHEMA="${schema}_rm" \
  NOTIFICATIONS_SCHEMA="${schema}_nt" KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic-idle" READ_MODEL_GROUP="$schema-rm" NOTIFICATIONS_GROUP="$schema-nt"
projection_pid=${pids[-1]}
say "building the read model for the query load (replay)"
replay_on 18083 600
start_host query-host 18082 READ_MODEL_URL="$POSTGRES_URL" READ_MODEL_SCHEMA="${schema}_rm" NOTIFICATIONS_SCHEMA="${schema}_nt" PG_POOL_SIZE=16
say "query host: GET /posts/{id}"
read -r get_rps get_p99 get_err < <(MODE=get wrk_run 64 http://127.0.0.1:18082 "$work/load.lua")
say "query host: GET /posts?limit=20"
read -r list_rps list_p99 list_err < <(MODE=list wrk_run 64 http://127.0.0.1:18082 "$work/load.lua")
stop_last_host

# --- a post of a million events, after a restart -------------------------------
# Its likes are written straight into the event store (the API would take
# minutes), each from a user of its own: the state a million distinct likers
# leave. No outbox rows, so nothing is published. The first command after a
# restart folds every event and saves a snapshot; the next restart starts
# from that snapshot. Each figure is one command's round trip, measured by curl.
big_events="${BENCH_BIG_POST:-1000000}"
say "a post of $big_events events: writing them"
big_token=$(head -1 "$TOKENS")
start_host command-host 18081 EVENT_STORE_URL="$store_url" RECORDS_URL="$store_url" KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic" PG_POOL_SIZE=8
big=$(curl -fsS -X POST -H "Authorization: Bearer $big_token" -H 'content-type: application/json' \
  -d '{"message":"a million likes"}' http://127.0.0.1:18081/posts | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
stop_last_host
psql_ -c "INSERT INTO $schema.events (event_id, stream_id, stream_type, version, event_type, schema, occurred_at, metadata, data)
  SELECT gen_random_uuid(), '$big', 'post', v, 'PostLiked', 1, now(),
         jsonb_build_object('user', 'liker' || v, 'request_id', gen_random_uuid(), 'idempotency_key', null),
         jsonb_build_object('user', 'liker' || v)
  FROM generate_series(2, $big_events) AS v"
first_command() { # sets first_s: seconds of one like's round trip, after a fresh start
  start_host command-host 18081 EVENT_STORE_URL="$store_url" RECORDS_URL="$store_url" KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic" PG_POOL_SIZE=8
  local token; token=$(sed -n "$((RANDOM % 1000 + 2))p" "$TOKENS")
  first_s=$(curl -fsS -o /dev/null -w '%{time_total}' -X POST -H "Authorization: Bearer $token" "http://127.0.0.1:18081/posts/$big/likes")
}
say "a post of $big_events events: first command after a restart, no snapshot yet"
first_command
big_fold_s=$first_s
for _ in $(seq 1 600); do
  [[ -n "$(psql_ -c "SELECT 1 FROM $schema.snapshots WHERE stream_id = '$big'")" ]] && break; sleep 0.1
done
big_snapshot_mb=$(psql_ -c "SELECT round(length(data) / 1048576.0, 1) FROM $schema.snapshots WHERE stream_id = '$big'")
stop_last_host
say "a post of $big_events events: first command after a restart, from its snapshot (three restarts)"
big_runs=()
for _ in 1 2 3; do
  first_command
  big_runs+=("$first_s")
  big_rss_mb=$(awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/${pids[-1]}/status")
  stop_last_host
done
big_ms() { awk -v s="$1" 'BEGIN { printf "%.1f", s * 1000 }'; }
big_snap_ms="$(big_ms "${big_runs[0]}") / $(big_ms "${big_runs[1]}") / $(big_ms "${big_runs[2]}")"

# --- replay -----------------------------------------------------------------
# Written straight into the events table and not into the outbox: as if long
# published, so the relay leaves them alone.
say "replay: generating $REPLAY_EVENTS events in the event store"
per_post=10
posts=$((REPLAY_EVENTS / per_post))
psql_ -c "
INSERT INTO $schema.events (stream_id, version, event_id, stream_type, event_type, schema, occurred_at, metadata, data)
SELECT p.id, v, gen_random_uuid(), 'post',
       CASE WHEN v = 1 THEN 'PostCreated' ELSE 'PostLiked' END, 1, now(),
       jsonb_build_object('user', 'author', 'request_id', gen_random_uuid(), 'idempotency_key', null),
       CASE WHEN v = 1
            THEN jsonb_build_object('post_id', p.id, 'author', 'author', 'message', 'generated',
                                    'created_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'))
            ELSE jsonb_build_object('user', 'fan' || v) END
FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, $posts)) p, generate_series(1, $per_post) v"
# A store's old events have long been vacuumed (hint bits set, statistics
# current); freshly generated rows have not, and the first reader of each would
# pay for that instead of the replay.
psql_ -c "VACUUM ANALYZE $schema.events"
replay_total=$(psql_ -c "SELECT count(*) FROM $schema.events")
say "replay: $replay_total events"
replay_on 18083 600
replay_rate=$(( replay_total * 1000 / (replay_ms > 0 ? replay_ms : 1) ))
replay_rss_mb=$(( $(awk '/VmHWM/ {print $2}' "/proc/$projection_pid/status") / 1024 ))
stop_last_host

say "baseline: COPY of the same number of event rows"
psql_ -c "CREATE TABLE $schema.copy_events (LIKE $schema.events INCLUDING INDEXES)"
psql_ -c "COPY (SELECT * FROM $schema.events) TO STDOUT" >"$work/events.copy"
rows=$(wc -l <"$work/events.copy")
start_ns=$(date +%s%N)
psql_ -c "\\copy $schema.copy_events FROM '$work/events.copy'"
copy_ms=$(( ($(date +%s%N) - start_ns) / 1000000 ))
copy_rate=$(( rows * 1000 / (copy_ms > 0 ? copy_ms : 1) ))
rm -f "$work/events.copy"

# --- the event store on FerretDB ---------------------------------------------
# The same create and like loads, and a replay, with the event store on the
# MongoDB wire-protocol server services.sh runs (FerretDB over this PostgreSQL;
# these are FerretDB's figures, not MongoDB's). Records stay on PostgreSQL.
fdb_create_rps=- fdb_create_p99=- fdb_create_err=- fdb_like_rps=- fdb_like_p99=- fdb_like_err=-
fdb_replay_total=0 fdb_replay_rate=0
if [[ -n "${MONGODB_URL:-}" ]]; then
  psql_ -c "CREATE SCHEMA ${schema}_fdb"
  fdb_records="$POSTGRES_URL?options=-csearch_path%3D${schema}_fdb"
  fdb_store="${MONGODB_URL%/}/${schema}_fdb"
  start_host command-host 18086 EVENT_STORE_URL="$fdb_store" RECORDS_URL="$fdb_records" KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic" PG_POOL_SIZE=32
  say "command host, event store on FerretDB: create post"
  read -r fdb_create_rps fdb_create_p99 fdb_create_err < <(MODE=create wrk_run 32 http://127.0.0.1:18086 "$work/load.lua")
  # Through files, not one pipeline: head's early exit would fail it (pipefail).
  "$bin/examples/dump_events" "$fdb_store" >"$work/fdb-events.tsv"
  cut -f1 "$work/fdb-events.tsv" | sort -u >"$work/fdb-posts"
  head -2000 "$work/fdb-posts" >"$work/ids"
  say "command host, event store on FerretDB: like"
  read -r fdb_like_rps fdb_like_p99 fdb_like_err < <(MODE=like wrk_run 32 http://127.0.0.1:18086 "$work/load.lua")
  stop_last_host
  start_host projection-host 18087 EVENT_STORE_URL="$fdb_store" READ_MODEL_URL="$POSTGRES_URL" READ_MODEL_SCHEMA="${schema}_fdb_rm" \
    NOTIFICATIONS_SCHEMA="${schema}_fdb_nt" KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic-idle" READ_MODEL_GROUP="$schema-fdb-rm" NOTIFICATIONS_GROUP="$schema-fdb-nt"
  say "replay from FerretDB"
  replay_on 18087 600
  fdb_replay_total=$(sed -n 's/.*"events_total":\([0-9]*\).*/\1/p' <<<"$progress")
  fdb_replay_rate=$(( ${fdb_replay_total:-0} * 1000 / (replay_ms > 0 ? replay_ms : 1) ))
  stop_last_host
  mongo_port="${MONGODB_URL##*:}"
  mongo_command 127.0.0.1 "${mongo_port%%/*}" dropDatabase "${schema}_fdb" >/dev/null 2>&1 || true
else
  say "no MongoDB wire-protocol server: the FerretDB rows are skipped"
fi

# --- live pipeline ----------------------------------------------------------
# Creates on a fixed schedule (open loop: see RATE in load.lua) into a fresh
# event store and topic, with the projection host consuming live. The lag of
# each event (command to projection) lands in the projection host's histogram;
# its p99 is read from the buckets.
# Two rates: half the create rate measured above (the target's load) and
# BENCH_LIVE_LOW_RATE (200/s), a rate the broker here keeps up with.
# The machine's CPU (all cores, every process: load generator, PostgreSQL,
# broker, hosts) over the load, from /proc/stat: "busy total" ticks.
cpu_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat; }
cpu_busy() { # "busy total" before, after -> percent busy
  awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " ");
    t = y[2] - x[2]; if (t > 0) printf "%d%%", 100 * (y[1] - x[1]) / t; else print "n/a" }'
}
# p50 and p99 of a histogram over the load, as bucket bounds: the growth of
# each bucket whose line starts with $1 between two /metrics snapshots.
quantiles() { # bucket-line-prefix before after -> "p50 p99"
  awk -v prefix="$1" '
    function show(b) { return b == "+Inf" ? ">5000ms" : "<=" b * 1000 "ms" }
    index($1, prefix) == 1 {
      le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le)
      if (FILENAME ~ /before/) { was[le] = $2 } else { n++; bound[n] = le; count[n] = $2 - was[le] } }
    END {
      total = count[n]
      if (n == 0 || total <= 0) { print "none none"; exit }
      for (i = 1; i <= n; i++) if (count[i] >= 0.5 * total) { p50 = show(bound[i]); break }
      for (i = 1; i <= n; i++) if (count[i] >= 0.99 * total) { p99 = show(bound[i]); break }
      print p50, p99 }' "$2" "$3"
}
live_run() { # name rate [mode]; sets live_result="rps events caught_up cpu p50 p99 outbox_p50 outbox_p99 transit_p50 transit_p99"
  local name=$1 rate=$2 mode=${3:-create} live_schema="${schema}_$1"
  psql_ -c "CREATE SCHEMA $live_schema"
  local url="$POSTGRES_URL?options=-csearch_path%3D$live_schema"
  create_topic "$topic-$name" "$partitions"
  start_host command-host 18091 EVENT_STORE_URL="$url" RECORDS_URL="$url" KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic-$name" PG_POOL_SIZE=32
  start_host projection-host 18093 EVENT_STORE_URL="$url" READ_MODEL_URL="$POSTGRES_URL" PROJECTION_INSTANCE_ID="bench-$name" \
    READ_MODEL_SCHEMA="${live_schema}_rm" NOTIFICATIONS_SCHEMA="${live_schema}_nt" KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic-$name" \
    READ_MODEL_GROUP="$live_schema-rm" NOTIFICATIONS_GROUP="$live_schema-nt"
  local ready=no
  for _ in $(seq 1 600); do curl -fsS http://127.0.0.1:18093/readyz >/dev/null 2>&1 && { ready=yes; break; }; sleep 0.1; done
  [[ $ready == yes ]] || { say "live $name: the projection host did not join its groups in 60 s"; cat "$work/projection-host-18093.log" >&2; exit 1; }
  # Warm-up: a few posts, projected, before the histogram is read; the
  # measured lag is the difference after the load, so joining is not in it.
  local token i projected
  token=$(head -1 "$TOKENS")
  for i in $(seq 1 20); do
    curl -fsS -o /dev/null -X POST -H "Authorization: Bearer $token" -H 'content-type: application/json' \
      -d '{"message":"warm-up"}' http://127.0.0.1:18091/posts
  done
  for _ in $(seq 1 300); do
    projected=$(metric 18093 'sourcegram_events_projected_total{projection="read_model"}')
    (( ${projected:-0} >= 20 )) && break
    sleep 0.1
  done
  if [[ $mode == hot ]]; then
    HOT=$(curl -fsS -X POST -H "Authorization: Bearer $token" -H 'content-type: application/json' \
      -d '{"message":"hot"}' http://127.0.0.1:18091/posts | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
    export HOT
  fi
  curl -fsS http://127.0.0.1:18093/metrics >"$work/lag-before"
  curl -fsS http://127.0.0.1:18091/metrics >"$work/outbox-before"
  local connections=64 rps p99 errors events caught_up=no busy_before busy
  busy_before=$(cpu_ticks)
  read -r rps p99 errors < <(RATE=$rate MODE=$mode wrk_run "$connections" http://127.0.0.1:18091 "$work/load.lua")
  busy=$(cpu_busy "$busy_before" "$(cpu_ticks)")
  events=$(psql_ -c "SELECT count(*) FROM $live_schema.events")
  for _ in $(seq 1 1200); do
    projected=$(metric 18093 'sourcegram_events_projected_total{projection="read_model"}')
    (( ${projected:-0} >= events )) && { caught_up=yes; break; }
    sleep 0.1
  done
  local lag outbox transit
  curl -fsS http://127.0.0.1:18093/metrics >"$work/lag-after"
  curl -fsS http://127.0.0.1:18091/metrics >"$work/outbox-after"
  lag=$(quantiles 'sourcegram_projection_lag_seconds_bucket{projection="read_model",' "$work/lag-before" "$work/lag-after")
  # Where the lag went: command to the broker's acknowledgement (the outbox),
  # the relay's producer to the read model's consumer (the broker).
  outbox=$(quantiles 'sourcegram_outbox_delay_seconds_bucket{' "$work/outbox-before" "$work/outbox-after")
  transit=$(quantiles 'sourcegram_broker_transit_seconds_bucket{projection="read_model",' "$work/lag-before" "$work/lag-after")
  stop_last_host; stop_last_host
  live_result="$rps $events $caught_up $busy $lag $outbox $transit"
}
live_half=$(( create_rps / 2 ))
live_quarter=$(( create_rps / 4 ))
live_low="${BENCH_LIVE_LOW_RATE:-200}"
say "live pipeline: about $live_half creates/s (half the create rate) with the projection host consuming"
live_run half "$live_half"
read -r half_rps half_events half_caught half_cpu half_p50 half_p99 half_outbox50 half_outbox99 half_transit50 half_transit99 <<<"$live_result"
say "live pipeline: about $live_quarter creates/s (a quarter of the create rate)"
live_run quarter "$live_quarter"
read -r quarter_rps quarter_events quarter_caught quarter_cpu quarter_p50 quarter_p99 quarter_outbox50 quarter_outbox99 quarter_transit50 quarter_transit99 <<<"$live_result"
say "live pipeline: about $live_low creates/s"
live_run low "$live_low"
read -r low_rps low_events low_caught low_cpu low_p50 low_p99 low_outbox50 low_outbox99 low_transit50 low_transit99 <<<"$live_result"
say "live pipeline: about $hot_rate likes/s on one hot post, each from a user of its own"
live_run hot "$hot_rate" hot
read -r hot_rps hot_events hot_caught hot_cpu hot_p50 hot_p99 hot_outbox50 hot_outbox99 hot_transit50 hot_transit99 <<<"$live_result"

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a ~ /^[0-9.]+$/) printf "%.2f", a / b; else print "n/a" }'; }
cat <<EOF

| measurement | result | p99 | baseline (same run) | ratio |
| --- | --- | --- | --- | --- |
| create post, 32 connections | $create_rps cmd/s (non-2xx: $create_err) | $create_p99 ms | pgbench insert, 16 clients: $insert_tps/s | $(ratio "$create_rps" "$insert_tps") |
| create post, publishing held back (diagnostic) | $held_rps cmd/s (non-2xx: $held_err) | $held_p99 ms | pgbench insert: $insert_tps/s | $(ratio "$held_rps" "$insert_tps") |
| like, 32 connections ($appended appended) | $like_rps cmd/s (non-2xx: $like_err) | $like_p99 ms | pgbench insert: $insert_tps/s | $(ratio "$like_rps" "$insert_tps") |
| like, one hot post, 32 connections, each like from a user of its own ($hotc_appended appended; $hotc_batch commands per append) | $hotc_rps cmd/s (non-2xx: $hotc_err) | $hotc_p99 ms | like spread over many posts (row above): $like_rps cmd/s | $(ratio "$hotc_rps" "$like_rps") |
| first like after a restart on a post of $big_events events, from its snapshot ($big_snapshot_mb MB), three restarts | $big_snap_ms ms; command host RSS after: $big_rss_mb MB | | the same, folding every event (no snapshot yet): $(big_ms "$big_fold_s") ms | |
| like again (no-op, confirmed against the store; $relike_appended appended), 32 connections | $relike_rps cmd/s (non-2xx: $relike_err) | $relike_p99 ms | pgbench point select, 64 clients: $select_tps/s | $(ratio "$relike_rps" "$select_tps") |
| GET /posts/{id}, 64 connections | $get_rps req/s (non-2xx: $get_err) | $get_p99 ms | pgbench point select, 64 clients: $select_tps/s | $(ratio "$get_rps" "$select_tps") |
| GET /posts?limit=20, 64 connections | $list_rps req/s (non-2xx: $list_err) | $list_p99 ms | pgbench point select: $select_tps/s | $(ratio "$list_rps" "$select_tps") |
| replay, $replay_total events | $replay_rate events/s, peak RSS $replay_rss_mb MB | | COPY of $rows event rows: $copy_rate rows/s | $(ratio "$replay_rate" "$copy_rate") |
| create post, event store on FerretDB 1.24, 32 connections | $fdb_create_rps cmd/s (non-2xx: $fdb_create_err) | $fdb_create_p99 ms | pgbench insert: $insert_tps/s | $(ratio "$fdb_create_rps" "$insert_tps") |
| like, event store on FerretDB 1.24, 32 connections | $fdb_like_rps cmd/s (non-2xx: $fdb_like_err) | $fdb_like_p99 ms | pgbench insert: $insert_tps/s | $(ratio "$fdb_like_rps" "$insert_tps") |
| replay from FerretDB 1.24, $fdb_replay_total events | $fdb_replay_rate events/s | | COPY: $copy_rate rows/s | $(ratio "$fdb_replay_rate" "$copy_rate") |
| outbox during the write loads | ${published:-0} of $total events published by the end of the loads | | broker produce (relay settings): $produce_rate msgs/s | |
| live pipeline at half the create rate | $half_rps creates/s, $half_events events, caught up within 120 s: $half_caught; machine CPU busy $half_cpu; lag p50 $half_p50; of which outbox (command to broker ack) p50 $half_outbox50, p99 $half_outbox99, broker (producer to consumer) p50 $half_transit50, p99 $half_transit99 | lag $half_p99 | | |
| live pipeline at a quarter of the create rate | $quarter_rps creates/s, $quarter_events events, caught up within 120 s: $quarter_caught; machine CPU busy $quarter_cpu; lag p50 $quarter_p50; of which outbox (command to broker ack) p50 $quarter_outbox50, p99 $quarter_outbox99, broker (producer to consumer) p50 $quarter_transit50, p99 $quarter_transit99 | lag $quarter_p99 | | |
| live pipeline, one hot post at $hot_rate likes/s | $hot_rps likes/s, $hot_events events, caught up within 120 s: $hot_caught; machine CPU busy $hot_cpu; lag p50 $hot_p50; of which outbox p50 $hot_outbox50, p99 $hot_outbox99, broker p50 $hot_transit50, p99 $hot_transit99 | lag $hot_p99 | | |
| live pipeline at $live_low creates/s | $low_rps creates/s, $low_events events, caught up within 120 s: $low_caught; machine CPU busy $low_cpu; lag p50 $low_p50; of which outbox (command to broker ack) p50 $low_outbox50, p99 $low_outbox99, broker (producer to consumer) p50 $low_transit50, p99 $low_transit99 | lag $low_p99 | | |

EOF
psql_ -c "DROP SCHEMA $schema CASCADE; DROP SCHEMA ${schema}_rm CASCADE; DROP SCHEMA ${schema}_nt CASCADE; DROP SCHEMA ${schema}_held CASCADE;
          DROP SCHEMA ${schema}_half CASCADE; DROP SCHEMA ${schema}_half_rm CASCADE; DROP SCHEMA ${schema}_half_nt CASCADE;
          DROP SCHEMA ${schema}_quarter CASCADE; DROP SCHEMA ${schema}_quarter_rm CASCADE; DROP SCHEMA ${schema}_quarter_nt CASCADE;
          DROP SCHEMA ${schema}_low CASCADE; DROP SCHEMA ${schema}_low_rm CASCADE; DROP SCHEMA ${schema}_low_nt CASCADE;
          DROP SCHEMA ${schema}_hot CASCADE; DROP SCHEMA ${schema}_hot_rm CASCADE; DROP SCHEMA ${schema}_hot_nt CASCADE" 2>/dev/null || true
psql_ -c "DROP SCHEMA IF EXISTS ${schema}_fdb CASCADE; DROP SCHEMA IF EXISTS ${schema}_fdb_rm CASCADE;
          DROP SCHEMA IF EXISTS ${schema}_fdb_nt CASCADE" 2>/dev/null || true
