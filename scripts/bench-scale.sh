#!/usr/bin/env bash
# The data-scale run of scripts/bench.sh (`scripts/bench.sh scale`): for each
# size, a PostgreSQL event store of N posts with 10 events each (plus one post
# of 10,000 comments), the read model rebuilt from it by a replay, then every
# query of the query host under load, next to pgbench's point select on a
# table of N rows measured in the same run.
#
# The events are written by SQL straight into the events table, in the format
# the command host writes (the envelope: domain/src/envelope.rs), as if long published: a bulk load
# of real events, which the replay then decodes and folds like any others.
# Post i (1..N) is by author(i mod 1000); 5% (i mod 20 = 0) have 9 comments
# and no likes, the others i mod 10 likes and edits for the rest, so
# min_likes=9 matches 9.5% of the posts, has_comments=true 5% and
# author=author7 0.1%.
#
# Reported per size: the replay's events/s and peak RSS, the event store's
# size on disk, and p50/p99 of each query at 16 connections (wrk), with
# pgbench's point-select p50/p99 at 16 clients beside them.
#   BENCH_SCALE_POSTS ("10000 100000 1000000")  the sizes, in posts
#   BENCH_SECONDS (10)  length of each load
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"
root="$here/.."
SIZES="${BENCH_SCALE_POSTS:-10000 100000 1000000}"
SECONDS_EACH="${BENCH_SECONDS:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sourcegram/target}"
work="$(mktemp -d)"
pids=() schemas=()
say() { printf 'bench-scale: %s\n' "$*" >&2; }
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for schema in "${schemas[@]}"; do
    psql "$POSTGRES_URL" -qAtX -c "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null || true
  done
  SOURCEGRAM_STATE_DIR="$work/state" SOURCEGRAM_KAFKA_PORT="${BENCH_KAFKA_PORT:-19092}" "$here/services.sh" stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || { say "installing wrk"; apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; }
# A broker of this run's own, as scripts/bench.sh: the projection host needs
# one to start, though the replay reads only the event store.
export SOURCEGRAM_STATE_DIR="$work/state" SOURCEGRAM_KAFKA_PORT="${BENCH_KAFKA_PORT:-19092}"
export SOURCEGRAM_KAFKA_CONTROLLER_PORT="$((SOURCEGRAM_KAFKA_PORT + 1))"
eval "$("$here/services.sh" start)"
say "building release binaries"
(cd "$root" && cargo build --release -q -p command-host -p projection-host -p query-host --bins)
bin="$CARGO_TARGET_DIR/release"
psql_() { PGOPTIONS=--client-min-messages=warning psql "$POSTGRES_URL" -qAtX "$@"; }
export TOKEN_SECRET="bench-secret-$RANDOM" ADMIN_TOKEN="bench-admin-$RANDOM"

# wrk's p50 and p99 in ms, and its count of non-2xx answers.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.2f", v}'; }
wrk_latency() { # url -> "p50 p99 errors"
  local out; out=$(wrk -t2 -c16 -d"${SECONDS_EACH}s" --latency "$1")
  echo "$(awk '$1 == "50%" {print $2}' <<<"$out" | to_ms) $(awk '$1 == "99%" {print $2}' <<<"$out" | to_ms) $(awk '/Non-2xx/ {print $NF}' <<<"$out" | grep . || echo 0)"
}
# pgbench's p50 and p99 in ms, from its per-transaction log.
pgbench_latency() { # script
  rm -f "$work"/pgbench_log.*
  (cd "$work" && pgbench -n -c 16 -j 2 -T "$SECONDS_EACH" -l -f "$1" "$POSTGRES_URL" >/dev/null 2>&1)
  cat "$work"/pgbench_log.* | awk '{print $3}' | sort -n |
    awk '{v[NR]=$1} END {printf "%.2f %.2f\n", v[int(NR*0.5)+1]/1000, v[int(NR*0.99)+1]/1000}'
}
iso() { echo "to_char(($1) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"; }

rows=""
for posts in $SIZES; do
  schema="bench_$(date +%s)"
  while psql_ -c "SELECT 1 FROM pg_namespace WHERE nspname = '$schema'" | grep -q 1; do sleep 1; schema="bench_$(date +%s)"; done
  schemas+=("$schema" "${schema}_rm" "${schema}_nt")
  psql_ -c "CREATE SCHEMA $schema"
  store_url="$POSTGRES_URL?options=-csearch_path%3D$schema"
  topic="bench-$schema"
  create_topic "$topic" 1
  # The command host makes the store's tables, as in a deployment.
  start_host command-host 18181 EVENT_STORE_URL="$store_url" RECORDS_URL="$store_url" KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic"
  stop_last_host

  say "$posts posts: generating $((posts * 10 + 10001)) events"
  base="timestamptz '2026-01-01'"
  started=$(date +%s%N)
  psql_ -c "
  INSERT INTO $schema.events (stream_id, version, event_id, stream_type, event_type, schema, occurred_at, metadata, data)
  SELECT p.id, v, gen_random_uuid(), 'post', kind, 1, at,
         jsonb_build_object('user', p.author, 'request_id', gen_random_uuid(), 'idempotency_key', null),
         CASE kind
           WHEN 'PostCreated' THEN jsonb_build_object('post_id', p.id, 'author', p.author,
                'message', 'generated post', 'created_at', $(iso at))
           WHEN 'PostLiked' THEN jsonb_build_object('user', 'fan' || v)
           WHEN 'CommentAdded' THEN jsonb_build_object('comment_id', gen_random_uuid(), 'author', 'fan' || v,
                'text', 'generated comment', 'created_at', $(iso at))
           ELSE jsonb_build_object('message', 'edited post', 'edited_at', $(iso at))
         END
  FROM (SELECT gen_random_uuid() AS id, i, 'author' || (i % 1000) AS author,
               $base + i * interval '1 second' AS created
        FROM generate_series(1, $posts) AS i) p,
       LATERAL (SELECT v, p.created + (v - 1) * interval '1 millisecond' AS at,
                       CASE WHEN v = 1 THEN 'PostCreated'
                            WHEN p.i % 20 = 0 THEN 'CommentAdded'
                            WHEN v <= 1 + p.i % 10 THEN 'PostLiked'
                            ELSE 'MessageEdited' END AS kind
                FROM generate_series(1, 10) AS v) e;
  -- The post of 10,000 comments, the newest.
  INSERT INTO $schema.events (stream_id, version, event_id, stream_type, event_type, schema, occurred_at, metadata, data)
  SELECT p.id, v, gen_random_uuid(), 'post', CASE WHEN v = 1 THEN 'PostCreated' ELSE 'CommentAdded' END, 1, at,
         jsonb_build_object('user', 'author1', 'request_id', gen_random_uuid(), 'idempotency_key', null),
         CASE WHEN v = 1
              THEN jsonb_build_object('post_id', p.id, 'author', 'author1', 'message', 'the busy post', 'created_at', $(iso at))
              ELSE jsonb_build_object('comment_id', gen_random_uuid(), 'author', 'fan' || v,
                                      'text', 'generated comment', 'created_at', $(iso at)) END
  FROM (SELECT gen_random_uuid() AS id) p,
       LATERAL (SELECT v, $base + ($posts + 1) * interval '1 second' + v * interval '1 millisecond' AS at
                FROM generate_series(1, 10001) AS v) e"
  # As a long-lived store is: vacuumed, its statistics current.
  psql_ -c "VACUUM ANALYZE $schema.events"
  load_s=$(( ($(date +%s%N) - started) / 1000000000 ))
  events=$(psql_ -c "SELECT count(*) FROM $schema.events")
  store_mb=$(( $(psql_ -c "SELECT pg_total_relation_size('$schema.events')") / 1048576 ))
  busy=$(psql_ -c "SELECT stream_id FROM $schema.events WHERE version = 10001")

  say "$posts posts: replaying $events events (loaded in ${load_s}s)"
  create_topic "$topic-idle" 1
  start_host projection-host 18183 EVENT_STORE_URL="$store_url" READ_MODEL_URL="$POSTGRES_URL" READ_MODEL_SCHEMA="${schema}_rm" \
    NOTIFICATIONS_SCHEMA="${schema}_nt" KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_TOPIC="$topic-idle" \
    READ_MODEL_GROUP="$schema-rm" NOTIFICATIONS_GROUP="$schema-nt"
  projection_pid=${pids[-1]}
  replay_on 18183
  replay_rate=$(( events * 1000 / (replay_ms > 0 ? replay_ms : 1) ))
  replay_rss_mb=$(( $(awk '/VmHWM/ {print $2}' "/proc/$projection_pid/status") / 1024 ))
  stop_last_host
  delete_topic "^($topic|$topic-idle)\$" >/dev/null 2>&1 || true

  say "$posts posts: baseline, pgbench point select on $posts rows"
  psql_ -c "CREATE TABLE $schema.pgb_posts (n int PRIMARY KEY, id uuid, author text, message text, likes int, created_at timestamptz, version bigint);
            INSERT INTO $schema.pgb_posts SELECT n, gen_random_uuid(), 'alice', 'benchmark post', 0, now(), 1 FROM generate_series(1, $posts) n"
  psql_ -c "VACUUM ANALYZE $schema.pgb_posts"
  printf '\\set n random(1, %s)\nSELECT * FROM %s.pgb_posts WHERE n = :n;\n' "$posts" "$schema" >"$work/select.sql"
  read -r pg_p50 pg_p99 < <(pgbench_latency "$work/select.sql")

  start_host query-host 18182 READ_MODEL_URL="$POSTGRES_URL" READ_MODEL_SCHEMA="${schema}_rm" NOTIFICATIONS_SCHEMA="${schema}_nt" PG_POOL_SIZE=16
  q=http://127.0.0.1:18182
  # Page 1,000 (or the last page, on a list shorter than that), by following the cursors.
  deep="$q/posts?limit=20" page=1
  while ((page < 1000)); do
    cursor=$(curl -fsS "$deep" | sed -n 's/.*"next_cursor":"\([0-9a-f]*\)".*/\1/p')
    [[ -n "$cursor" ]] || break
    deep="$q/posts?limit=20&cursor=$cursor" page=$((page + 1))
  done
  for query in "first page|$q/posts?limit=20" "page $page by cursor|$deep" "author=|$q/posts?author=author7" \
    "min_likes=9|$q/posts?min_likes=9" "has_comments=true|$q/posts?has_comments=true" \
    "/posts/{id}, 10,000 comments|$q/posts/$busy"; do
    name=${query%%|*} url=${query#*|}
    say "$posts posts: $name"
    read -r p50 p99 errors < <(wrk_latency "$url")
    rows+="| $posts | $name | $p50 ms | $p99 ms | $errors | $pg_p50 / $pg_p99 ms | $(awk -v a="$p99" -v b="$pg_p99" 'BEGIN {printf "%.1f", a / b}') |"$'\n'
  done
  stop_last_host
  rows+="| $posts | replay of $events events | $replay_rate events/s | peak RSS $replay_rss_mb MB | | event store: $store_mb MB on disk | |"$'\n'
  psql_ -c "DROP SCHEMA $schema CASCADE; DROP SCHEMA ${schema}_rm CASCADE; DROP SCHEMA ${schema}_nt CASCADE"
done

cat <<EOF

| posts | query | p50 | p99 | non-2xx | pgbench point select p50 / p99 (same run, same size) | p99 ratio |
| --- | --- | --- | --- | --- | --- | --- |
$rows
EOF
