#!/usr/bin/env bash
# Stops the hosts scripts/up.sh started; with --services also the services.
set -euo pipefail
# A process that has exited but not yet been reaped (a zombie) counts as gone.
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ -n "$s" && "$s" != Z* ]]; }
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
