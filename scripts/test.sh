#!/usr/bin/env bash
# The test command: starts the real services (installing them if missing), then
# runs every test of the workspace against them. Extra arguments go to cargo test.
#
# The tests use the broker scripts/services.sh starts (127.0.0.1:9092, or
# SOURCEGRAM_KAFKA_PORT), unless SOURCEGRAM_TEST_KAFKA_BROKERS names another.
# Each test makes schemas and topics of its own (a prefix and 32 hex digits), so
# tests never share state and a failed one can be inspected while the run
# goes on; when cargo is done, this script drops the schemas and deletes the
# topics that the run made, passed or failed, so a run leaves the services as
# it found them. Tests that restart a broker start a private one from the jars
# in SOURCEGRAM_KAFKA_LIB, which services.sh fetches.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sourcegram/target}"

source "$here/lib.sh"
log="$(mktemp)"
eval "$("$here/services.sh" start)"
export SOURCEGRAM_KAFKA_LIB
export SOURCEGRAM_TEST_POSTGRES_URL="${SOURCEGRAM_TEST_POSTGRES_URL:-$POSTGRES_URL}"
export SOURCEGRAM_TEST_KAFKA_BROKERS="${SOURCEGRAM_TEST_KAFKA_BROKERS:-$KAFKA_BROKERS}"

# What tests name their schemas (with the replay's suffixes) and topics.
schema_pattern='^[a-z0-9_]+_[0-9a-f]{32}(_next|_retired)?$'
topic_pattern='^[a-z0-9-]+-[0-9a-f]{32}$'
test_schemas() {
  psql "$SOURCEGRAM_TEST_POSTGRES_URL" -qAtX -c \
    "SELECT nspname FROM pg_namespace WHERE nspname ~ '$schema_pattern' ORDER BY 1"
}
test_topics() {
  KAFKA_BROKERS="$SOURCEGRAM_TEST_KAFKA_BROKERS" kafka_tool org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$SOURCEGRAM_TEST_KAFKA_BROKERS" --list | grep -E "$topic_pattern" | sort || true
}
schemas_before="$(mktemp)" topics_before="$(mktemp)"
test_schemas >"$schemas_before"
test_topics >"$topics_before"
clean_up() {
  local schemas topics
  schemas=$(test_schemas | comm -13 "$schemas_before" -)
  if [[ -n "$schemas" ]]; then
    sed 's/.*/DROP SCHEMA IF EXISTS "&" CASCADE;/' <<<"$schemas" |
      PGOPTIONS='-c client_min_messages=warning' psql "$SOURCEGRAM_TEST_POSTGRES_URL" -qAtX >/dev/null
  fi
  topics=$(test_topics | comm -13 "$topics_before" -)
  if [[ -n "$topics" ]]; then
    # One call: --topic takes a regular expression.
    KAFKA_BROKERS="$SOURCEGRAM_TEST_KAFKA_BROKERS" kafka_tool org.apache.kafka.tools.TopicCommand \
      --bootstrap-server "$SOURCEGRAM_TEST_KAFKA_BROKERS" --delete --topic "^($(paste -sd'|' <<<"$topics"))\$" >/dev/null
  fi
  echo "test.sh: dropped $(grep -c . <<<"$schemas" || true) test schemas and deleted $(grep -c . <<<"$topics" || true) test topics"
  rm -f "$log" "$schemas_before" "$topics_before"
}
trap clean_up EXIT

status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# libtest has no "skipped" outcome: a leg whose server is not configured returns
# early and counts as passed. Say plainly which legs did not run. A leg's line
# can land in the middle of libtest's own ("test x ... SKIPPED: ..."), since the
# two are written by different threads: match anywhere in the line.
skipped_legs=$(grep -o 'SKIPPED: [^:]*: [A-Z_]* is not set, so the [A-Za-z ]* adapter was NOT tested here' "$log" | sed 's/^SKIPPED: /  /' | sort -u || true)
skipped=$(grep -c . <<<"$skipped_legs" || true)
if ((skipped > 0)); then
  echo
  echo "================================================================"
  echo "SKIPPED: $skipped adapter test(s) did not run (cargo counts them as passed):"
  echo "$skipped_legs"
  echo "Set MONGODB_URL / MSSQL_URL to run them (see docs/services.md)."
  echo "================================================================"
fi
exit "$status"
