#!/usr/bin/env bash
# The test command: starts the real services (installing them if missing), then
# runs every test of the workspace against them. Extra arguments go to cargo test.
#
# Unless SOURCEGRAM_TEST_KAFKA_BROKERS names a broker, each run gets a broker of
# its own with an empty store, on port 19093, stopped afterwards: tansu's SQLite
# store slows down as it grows, and test topics are never deleted, so a store
# reused run after run makes the suite slower each time until it fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sourcegram/target}"

log="$(mktemp)"
cleanup() { rm -f "$log"; }
if [[ -z "${SOURCEGRAM_TEST_KAFKA_BROKERS:-}" ]]; then
  test_state="$(mktemp -d "${TMPDIR:-/tmp}/sourcegram-test.XXXXXX")"
  cleanup() {
    rm -f "$log"
    SOURCEGRAM_STATE_DIR="$test_state" SOURCEGRAM_KAFKA_PORT="${SOURCEGRAM_TEST_KAFKA_PORT:-19093}" \
      "$here/services.sh" stop >/dev/null 2>&1 || true
    rm -rf "$test_state"
  }
  eval "$(SOURCEGRAM_STATE_DIR="$test_state" SOURCEGRAM_KAFKA_PORT="${SOURCEGRAM_TEST_KAFKA_PORT:-19093}" "$here/services.sh" start)"
else
  eval "$("$here/services.sh" start)"
  KAFKA_BROKERS="$SOURCEGRAM_TEST_KAFKA_BROKERS"
fi
trap cleanup EXIT
export SOURCEGRAM_TEST_POSTGRES_URL="${SOURCEGRAM_TEST_POSTGRES_URL:-$POSTGRES_URL}"
export SOURCEGRAM_TEST_KAFKA_BROKERS="$KAFKA_BROKERS"

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
