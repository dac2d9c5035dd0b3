#!/usr/bin/env bash
# The test command: starts the real services (installing them if missing), then
# runs every test of the workspace against them. Extra arguments go to cargo test.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."
eval "$("$here/services.sh" start)"
export SOURCEGRAM_TEST_POSTGRES_URL="${SOURCEGRAM_TEST_POSTGRES_URL:-$POSTGRES_URL}"
export SOURCEGRAM_TEST_KAFKA_BROKERS="${SOURCEGRAM_TEST_KAFKA_BROKERS:-$KAFKA_BROKERS}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sourcegram/target}"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# libtest has no "skipped" outcome: a leg whose server is not configured returns
# early and counts as passed. Say plainly which legs did not run.
skipped=$(grep -c '^SKIPPED:' "$log" || true)
if ((skipped > 0)); then
  echo
  echo "================================================================"
  echo "SKIPPED: $skipped adapter test(s) did not run (cargo counts them as passed):"
  grep '^SKIPPED:' "$log" | sed 's/^SKIPPED: /  /' | sort
  echo "Set MONGODB_URL / MSSQL_URL to run them (see docs/services.md)."
  echo "================================================================"
fi
exit "$status"
