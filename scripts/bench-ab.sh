#!/usr/bin/env bash
# scripts/bench-ab.sh <revision> [rounds]: is this checkout as fast as <revision>?
#
# Builds <revision> (exported with `git archive`, its own target directory under
# ~/.cache/sourcegram/ab, kept for the next run) and this checkout, then runs the
# two builds alternately, `rounds` times each (default 4), the order swapped every
# round, so that the machine's drift falls on both alike:
#   - the create-post load (command host, relay and a broker of the run's own;
#     32 connections, 10 s), each run on a fresh schema, next to a pgbench insert
#     run of the same round;
#   - a replay of one event store made of every create run's events.
# Prints a table per round and, for each load, the median of the per-round
# ratios (this checkout / <revision>). Needs PostgreSQL (scripts/services.sh)
# and wrk; leaves no schema, topic or process behind.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
. "$here/lib.sh"
[[ $# -ge 1 ]] || { echo "usage: scripts/bench-ab.sh <revision> [rounds]" >&2; exit 2; }
rev=$(git -C "$root" rev-parse --verify "$1^{commit}")
rounds="${2:-4}"
cache="${SOURCEGRAM_CACHE_DIR:-$HOME/.cache/sourcegram}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
say() { printf 'bench-ab: %s\n' "$*" >&2; }
command -v wrk >/dev/null || { say "wrk is required (apt-get install wrk)"; exit 1; }

work="$(mktemp -d)"
pids=()
schemas=()
tag="ab_$(date +%s)"
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for schema in "${schemas[@]}"; do psql "$POSTGRES_URL" -qAtX -c "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null || true; done
  SOURCEGRAM_STATE_DIR="$work/state" SOURCEGRAM_KAFKA_PORT="${BENCH_KAFKA_PORT:-19092}" "$here/services.sh" stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- the two builds ---------------------------------------------------------
old="$cache/ab/$rev"
if [[ ! -f "$old/src/Cargo.toml" ]]; then
  rm -rf "$old/src" && mkdir -p "$old/src"
  git -C "$root" archive "$rev" | tar -x -C "$old/src"
fi
say "building ${rev:0:12} and this checkout (release)"
(cd "$old/src" && CARGO_TARGET_DIR="$old/target" cargo build --release -q -p command-host -p projection-host --bins)
(cd "$root" && cargo build --release -q -p command-host -p projection-host --bins)
A="$old/target/release"
B="$CARGO_TARGET_DIR/release"

# A broker of this run's own, as in scripts/bench.sh.
export SOURCEGRAM_STATE_DIR="$work/state" SOURCEGRAM_KAFKA_PORT="${BENCH_KAFKA_PORT:-19092}"
export SOURCEGRAM_KAFKA_CONTROLLER_PORT="$((SOURCEGRAM_KAFKA_PORT + 1))"
eval "$("$here/services.sh" start)"
psql_() { psql "$POSTGRES_URL" -qAtX "$@"; }
topic="bench-$tag"
create_topic "$topic" 3
create_topic "$topic-idle" 1

export TOKEN_SECRET="bench-secret-$RANDOM" ADMIN_TOKEN="bench-admin-$RANDOM"
"$B/command-host" mint-token user --count 20000 >"$work/tokens"
cat >"$work/create.lua" <<'LUA'
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local made = 0
setup = function(thread) thread:set("thread_id", made); made = made + 1 end
init = function(args) math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919) end
request = function()
  return wrk.format("POST", "/posts", {["Authorization"] = "Bearer " .. tokens[math.random(#tokens)],
    ["Content-Type"] = "application/json"}, '{"message":"benchmark post"}')
end
LUA
export TOKENS="$work/tokens"
schemas+=("${tag}_pgb")
psql_ -c "CREATE SCHEMA ${tag}_pgb; CREATE TABLE ${tag}_pgb.events (stream_id uuid, version bigint, data jsonb, PRIMARY KEY (stream_id, version))"
echo "INSERT INTO ${tag}_pgb.events VALUES (gen_random_uuid(), 1, '{\"user\":\"alice\"}');" >"$work/insert.sql"

# --- the loads --------------------------------------------------------------
create_run() { # build-label bin-dir round; sets result (requests/s)
  local schema="${tag}_$1_$3"
  bin=$2
  psql_ -c "CREATE SCHEMA $schema"
  schemas+=("$schema")
  local url="$POSTGRES_URL?options=-csearch_path%3D$schema"
  start_host command-host 18091 EVENT_STORE_URL="$url" RECORDS_URL="$url" \
    KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic" PG_POOL_SIZE=32
  result=$(wrk -t2 -c32 -d10s -s "$work/create.lua" http://127.0.0.1:18091 | awk '/^Requests\/sec:/ {printf "%.0f", $2}')
  stop_last_host
}
replay_run() { # build-label bin-dir; sets result (events/s)
  bin=$2
  local model="${tag}_rm_$1"
  schemas+=("$model" "${model}_nt")
  start_host projection-host 18093 EVENT_STORE_URL="$store_url" READ_MODEL_URL="$POSTGRES_URL" \
    READ_MODEL_SCHEMA="$model" NOTIFICATIONS_SCHEMA="${model}_nt" KAFKA_BROKERS="$KAFKA_BROKERS" \
    KAFKA_TOPIC="$topic-idle" READ_MODEL_GROUP="$model" NOTIFICATIONS_GROUP="${model}_nt"
  replay_on 18093 1200
  stop_last_host
  result=$(( events * 1000 / (replay_ms > 0 ? replay_ms : 1) ))
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "| round | pgbench insert/s | create, ${rev:0:12} | create, this checkout | ratio |"
echo "| --- | --- | --- | --- | --- |"
create_ratios=()
for round in $(seq 1 "$rounds"); do
  say "round $round: create post"
  insert=$(pgbench -n -c 16 -j 2 -T 10 -f "$work/insert.sql" "$POSTGRES_URL" 2>/dev/null | awk '/^tps/ {printf "%.0f", $3}')
  if (( round % 2 )); then
    create_run old "$A" "$round"; a=$result; create_run new "$B" "$round"; b=$result
  else
    create_run new "$B" "$round"; b=$result; create_run old "$A" "$round"; a=$result
  fi
  create_ratios+=("$(ratio "$a" "$b")")
  echo "| $round | $insert | $a cmd/s | $b cmd/s | ${create_ratios[-1]} |"
done

# One store of every create run's events: the replays read it. The current
# build creates its tables.
store="${tag}_store"
psql_ -c "CREATE SCHEMA $store"
schemas+=("$store")
store_url="$POSTGRES_URL?options=-csearch_path%3D$store"
bin=$B
start_host command-host 18091 EVENT_STORE_URL="$store_url" RECORDS_URL="$store_url" KAFKA_BROKERS=127.0.0.1:1 KAFKA_TOPIC="$topic"
stop_last_host
for schema in "${schemas[@]}"; do
  if [[ $schema == "${tag}"_old_* || $schema == "${tag}"_new_* ]]; then
    psql_ -c "INSERT INTO $store.events SELECT * FROM $schema.events"
  fi
done
events=$(psql_ -c "SELECT count(*) FROM $store.events")

echo
echo "| round | replay of $events events, ${rev:0:12} | replay, this checkout | ratio |"
echo "| --- | --- | --- | --- |"
replay_ratios=()
for round in $(seq 1 "$rounds"); do
  say "round $round: replay"
  if (( round % 2 )); then
    replay_run old "$A"; a=$result; replay_run new "$B"; b=$result
  else
    replay_run new "$B"; b=$result; replay_run old "$A"; a=$result
  fi
  replay_ratios+=("$(ratio "$a" "$b")")
  echo "| $round | $a events/s | $b events/s | ${replay_ratios[-1]} |"
done

echo
echo "Median ratio (this checkout / ${rev:0:12}): create $(printf '%s\n' "${create_ratios[@]}" | median), replay $(printf '%s\n' "${replay_ratios[@]}" | median)."
