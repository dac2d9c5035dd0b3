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
for optional in MONGODB_URL MSSQL_URL; do
  if [[ -z "${!optional:-}" ]]; then
    echo "note: $optional is not set: the suites for that adapter will print SKIPPED and are NOT run"
  fi
done
cargo test --workspace "$@"
