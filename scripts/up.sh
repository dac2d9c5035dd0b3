#!/usr/bin/env bash
# Sets up and runs the whole system on this machine: starts PostgreSQL and the
# broker (installing them if missing), builds the three hosts, starts them on
# loopback, and prints where they listen and how to get a token.
# scripts/down.sh stops them again.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sourcegram/target}"
STATE_DIR="${SOURCEGRAM_STATE_DIR:-$HOME/.cache/sourcegram/state}"
PROFILE="${SOURCEGRAM_PROFILE:-release}"
mkdir -p "$STATE_DIR/hosts"

eval "$("$here/services.sh" start)"

# Secrets made once per machine, so tokens keep working across restarts.
secrets="$STATE_DIR/secrets.env"
if [[ ! -f "$secrets" ]]; then
  umask 077
  printf 'TOKEN_SECRET=%s\nADMIN_TOKEN=%s\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$secrets"
fi
set -a; source "$secrets"; set +a

# SOURCEGRAM_BIN_DIR: run the host binaries already in that directory (a CI
# artifact, say) instead of building them.
if [[ -n "${SOURCEGRAM_BIN_DIR:-}" ]]; then
  bin="$SOURCEGRAM_BIN_DIR"
else
  echo "up: building the hosts ($PROFILE; the first build takes a few minutes)" >&2
  flag=(); [[ "$PROFILE" == release ]] && flag=(--release)
  (cd "$root" && cargo build "${flag[@]}" -q -p command-host -p projection-host -p query-host)
  bin="$CARGO_TARGET_DIR/$PROFILE"
fi

export EVENT_STORE_URL="${EVENT_STORE_URL:-$POSTGRES_URL}" RECORDS_URL="${RECORDS_URL:-$POSTGRES_URL}"
export READ_MODEL_URL="${READ_MODEL_URL:-$POSTGRES_URL}" KAFKA_BROKERS KAFKA_TOPIC
# Static group membership, so a killed and restarted projection host resumes at
# once (docs/projection.md).
export PROJECTION_INSTANCE_ID="${PROJECTION_INSTANCE_ID-$(hostname)-projection-1}" # set it empty for dynamic membership

start_host() { # name port [probe]
  local name=$1 port=$2 probe=${3:-healthz} pidfile="$STATE_DIR/hosts/$1.pid"
  if [[ -f "$pidfile" ]] && alive "$(cat "$pidfile")"; then
    echo "up: $name already runs (pid $(cat "$pidfile"))" >&2
    return
  fi
  LISTEN_ADDR="127.0.0.1:$port" nohup "$bin/$name" >>"$STATE_DIR/hosts/$name.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 600); do
    if curl -fsS "http://127.0.0.1:$port/$probe" >/dev/null 2>&1; then return; fi
    if ! alive "$(cat "$pidfile")"; then
      echo "up: $name exited; the end of its log:" >&2; tail -20 "$STATE_DIR/hosts/$name.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "up: $name did not answer $probe on port $port; the end of its log:" >&2
  tail -20 "$STATE_DIR/hosts/$name.log" >&2; exit 1
}

start_host command-host "${COMMAND_PORT:-8081}"
# Ready means its consumers have joined their groups, so what is written from
# now on is projected.
start_host projection-host "${PROJECTION_PORT:-8083}" readyz
start_host query-host "${QUERY_PORT:-8082}"

token=$("$bin/command-host" mint-token alice)
cat <<EOF2

Sourcegram is up.
  command-host     http://127.0.0.1:${COMMAND_PORT:-8081}   (writes; bearer token)
  query-host       http://127.0.0.1:${QUERY_PORT:-8082}   (reads)
  projection-host  http://127.0.0.1:${PROJECTION_PORT:-8083}   (health, metrics, replay)
  logs and pids    $STATE_DIR/hosts/

A token for alice (24 h):
  export TOKEN=$token
Mint others with:
  TOKEN_SECRET=\$(grep TOKEN_SECRET $secrets | cut -d= -f2) $bin/command-host mint-token bob
Try it:
  curl -s -X POST http://127.0.0.1:${COMMAND_PORT:-8081}/posts -H "Authorization: Bearer \$TOKEN" \\
       -H 'Content-Type: application/json' -d '{"message":"hello"}'
  scripts/demo.sh                        # the whole API, step by step
  ADMIN_TOKEN=\$(grep ADMIN_TOKEN $secrets | cut -d= -f2) scripts/replay.sh   # rebuild the read model
Stop with scripts/down.sh.
EOF2
