#!/usr/bin/env bash
# Stops the hosts scripts/up.sh started; with --services also the services.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
here="$(cd "$(dirname "$0")" && pwd)"
STATE_DIR="${SOURCEGRAM_STATE_DIR:-$HOME/.cache/sourcegram/state}"
for name in query-host projection-host command-host; do
  pidfile="$STATE_DIR/hosts/$name.pid"
  if [[ -f "$pidfile" ]] && alive "$(cat "$pidfile")"; then
    kill -TERM "$(cat "$pidfile")"
    for _ in $(seq 1 100); do alive "$(cat "$pidfile")" || break; sleep 0.1; done
    echo "down: stopped $name"
  fi
  rm -f "$pidfile"
done
if [[ "${1:-}" == --services ]]; then "$here/services.sh" stop; fi
