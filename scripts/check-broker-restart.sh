#!/usr/bin/env bash
# Checks that the broker keeps what it acknowledged across its own restart, as
# the fault drills rely on: produce a message, restart the broker with
# scripts/services.sh, read the message back. It uses a broker of its own (state
# directory and port), so nothing else is disturbed and nothing else is mistaken
# for it. It also checks that the broker's store has the index services.sh adds
# (see index_broker_store there).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
TANSU_BIN="${SOURCEGRAM_TANSU_BIN:-${SOURCEGRAM_CACHE_DIR:-$HOME/.cache/sourcegram}/tansu/bin/tansu}"
export SOURCEGRAM_STATE_DIR SOURCEGRAM_KAFKA_PORT="${CHECK_KAFKA_PORT:-19097}"
SOURCEGRAM_STATE_DIR="$(mktemp -d)"
trap '"$here/services.sh" stop >/dev/null 2>&1 || true; rm -rf "$SOURCEGRAM_STATE_DIR"' EXIT
broker="tcp://127.0.0.1:$SOURCEGRAM_KAFKA_PORT"
topic="restart-check-$(date +%s)-$$"
marker="survives-restart-$RANDOM$RANDOM"

"$here/services.sh" start >/dev/null
"$TANSU_BIN" topic create "$topic" --partitions 1 --broker "$broker" >/dev/null
echo "{\"value\":{\"marker\":\"$marker\"}}" | timeout 30 "$TANSU_BIN" cat produce "$topic" --broker "$broker"
"$here/services.sh" restart-broker >/dev/null
if timeout 30 "$TANSU_BIN" cat consume "$topic" --broker "$broker" --max-wait-time-ms 2000 | grep -q "$marker"; then
  echo "broker restart check: the message produced before the restart was read back after it"
else
  echo "broker restart check FAILED: the message produced before the restart is gone" >&2
  exit 1
fi

# Every fetched message's headers are looked up by (topition, offset_id); without
# the index services.sh adds, that lookup scans every header ever stored.
plan=$(sqlite3 -cmd '.timeout 5000' "$SOURCEGRAM_STATE_DIR/tansu/tansu.db" "EXPLAIN QUERY PLAN
  SELECT h.k, h.v FROM header h JOIN record r ON h.topition = r.topition AND h.offset_id = r.offset_id
  WHERE r.topition = 1 AND r.offset_id = 1")
if grep -q "SEARCH h USING INDEX" <<<"$plan"; then
  echo "broker index check: fetched messages' headers are found by index"
else
  echo "broker index check FAILED: headers are looked up by a scan:" >&2
  echo "$plan" >&2
  exit 1
fi
