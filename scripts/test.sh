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
#
# The MongoDB legs run against MONGODB_URL: the FerretDB services.sh starts
# (mongodb://127.0.0.1:27017/), unless MONGODB_URL is set already. Without Go
# services.sh cannot build FerretDB, prints no MONGODB_URL, and those legs are
# reported as skipped at the end. The MongoDB databases a run makes on that
# FerretDB are dropped with the schemas and topics.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sourcegram/target}"

source "$here/lib.sh"
log="$(mktemp)"
# A MONGODB_URL set by the caller wins over the one services.sh prints (only
# when its FerretDB answers); the tests skip the MongoDB legs when it is unset.
caller_mongodb_url="${MONGODB_URL:-}"
unset MONGODB_URL
eval "$("$here/services.sh" start)"
services_mongodb_url="${MONGODB_URL:-}"
MONGODB_URL="${caller_mongodb_url:-$services_mongodb_url}"
if [[ -n "$MONGODB_URL" ]]; then export MONGODB_URL; else unset MONGODB_URL; fi
export SOURCEGRAM_KAFKA_LIB
export SOURCEGRAM_TEST_POSTGRES_URL="${SOURCEGRAM_TEST_POSTGRES_URL:-$POSTGRES_URL}"
export SOURCEGRAM_TEST_KAFKA_BROKERS="${SOURCEGRAM_TEST_KAFKA_BROKERS:-$KAFKA_BROKERS}"

# What tests name their schemas (with the replay's suffixes) and topics.
schema_pattern='^[a-z0-9_]+_[0-9a-f]{32}(_next|_retired)?$'
topic_pattern='^[a-z0-9-]+-[0-9a-f]{32}$'
test_schemas() { schemas_matching "$SOURCEGRAM_TEST_POSTGRES_URL" "$schema_pattern"; }
test_topics() { KAFKA_BROKERS="$SOURCEGRAM_TEST_KAFKA_BROKERS" topics_matching "$topic_pattern"; }
# The MongoDB databases tests make have the same names as their schemas. They
# are tracked only on the FerretDB services.sh runs (its PostgreSQL database
# lists them); a MongoDB of the caller's own is left alone.
ferretdb_pg_url="${POSTGRES_URL%/*}/ferretdb"
test_mongo_databases() {
  if [[ -n "$services_mongodb_url" && "${MONGODB_URL:-}" == "$services_mongodb_url" ]]; then
    ferretdb_databases "$ferretdb_pg_url" "$schema_pattern"
  fi
}
mongo_port="${services_mongodb_url##*:}" mongo_port="${mongo_port%%/*}"
schemas_before="$(mktemp)" topics_before="$(mktemp)" mongo_before="$(mktemp)"
test_schemas >"$schemas_before"
test_topics >"$topics_before"
test_mongo_databases >"$mongo_before"
# shellcheck disable=SC2317 # clean_up runs from the EXIT trap, which shellcheck does not follow
clean_up() {
  local schemas topics databases dropped=0
  schemas=$(test_schemas | comm -13 "$schemas_before" - | drop_schemas "$SOURCEGRAM_TEST_POSTGRES_URL")
  topics=$(test_topics | comm -13 "$topics_before" - | KAFKA_BROKERS="$SOURCEGRAM_TEST_KAFKA_BROKERS" delete_topics)
  databases=$(test_mongo_databases | comm -13 "$mongo_before" -)
  [[ -z "$databases" ]] || dropped=$(ferretdb_drop_databases "$mongo_port" "$ferretdb_pg_url" <<<"$databases")
  echo "test.sh: dropped $schemas test schemas, deleted $topics test topics and dropped $dropped MongoDB test databases"
  rm -f "$log" "$schemas_before" "$topics_before" "$mongo_before"
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
