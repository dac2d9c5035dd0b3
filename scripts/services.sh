#!/usr/bin/env bash
# Starts (installing first, if missing) the real services Sourcegram's hosts and
# tests use, on loopback only: PostgreSQL from Debian's packages and tansu, a
# Kafka-protocol broker built from crates.io. Running it twice is harmless.
#
#   scripts/services.sh [start]        install if missing, start, create what the hosts need
#   scripts/services.sh stop           stop only what this script started
#   scripts/services.sh stop-broker    stop only the broker this script started
#   scripts/services.sh restart-broker stop and start the broker (its data survives)
#   scripts/services.sh status         what is up
#   scripts/services.sh prune          drop the schemas tests, drills and benches left
#                                      (tests keep theirs for inspection); run it when
#                                      no tests run against the same database
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CACHE_DIR="${SOURCEGRAM_CACHE_DIR:-$HOME/.cache/sourcegram}"
STATE_DIR="${SOURCEGRAM_STATE_DIR:-$CACHE_DIR/state}"
TANSU_ROOT="$CACHE_DIR/tansu"
TANSU_BIN="${SOURCEGRAM_TANSU_BIN:-$TANSU_ROOT/bin/tansu}"
TANSU_VERSION="0.6.0"
KAFKA_PORT="${SOURCEGRAM_KAFKA_PORT:-9092}"
PG_PORT="${SOURCEGRAM_PG_PORT:-5432}"
PG_VERSION=15
TOPIC="${KAFKA_TOPIC:-post-events}"
# tansu pays for each partition on every produce and fetch request (a few SQLite
# queries each), so partitions cost broker CPU whether they carry events or not:
# 3 still lets up to three instances of a projection share the work
# (docs/projection.md has the measurements).
PARTITIONS="${SOURCEGRAM_PARTITIONS:-3}"
POSTGRES_URL="postgres://sourcegram:sourcegram@127.0.0.1:$PG_PORT/sourcegram"
KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"

say() { printf 'services: %s\n' "$*" >&2; }

wait_for_port() { # port seconds
  local deadline=$((SECONDS + $2))
  until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.2
  done
}

apt_install() { # packages...
  if ! command -v apt-get >/dev/null; then
    say "cannot install $* here: no apt-get; install them and run again"; exit 1
  fi
  say "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

install_build_tools() {
  # rdkafka builds its bundled librdkafka with these.
  local missing=()
  command -v cc >/dev/null || missing+=(build-essential)
  command -v make >/dev/null || missing+=(make)
  dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
  command -v curl >/dev/null || missing+=(curl)
  if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
}

pg_cluster_bin() { echo "/usr/lib/postgresql/$PG_VERSION/bin"; }

start_postgres() {
  if [[ ! -x "$(pg_cluster_bin)/postgres" ]] || ! command -v pg_ctlcluster >/dev/null; then
    apt_install postgresql
  fi
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1" "$2}' | grep -qx "$PG_VERSION main"; then
    say "creating PostgreSQL cluster $PG_VERSION/main"
    pg_createcluster "$PG_VERSION" main >/dev/null
  fi
  if ! pg_lsclusters -h | awk -v v="$PG_VERSION" '$1==v && $2=="main" {print $4}' | grep -q online; then
    say "starting PostgreSQL $PG_VERSION"
    pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main start
    touch "$STATE_DIR/postgres.started-by-script"
  fi
  wait_for_port "$PG_PORT" 30 || { say "PostgreSQL did not answer on port $PG_PORT"; exit 1; }
  # Role and database of our own, with a password, reachable over TCP on loopback.
  su postgres -c "psql -qAt -p $PG_PORT" >/dev/null <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sourcegram') THEN
    CREATE ROLE sourcegram LOGIN PASSWORD 'sourcegram' CREATEDB;
  END IF;
END $$;
SQL
  if ! su postgres -c "psql -qAt -p $PG_PORT -c \"SELECT 1 FROM pg_database WHERE datname = 'sourcegram'\"" | grep -q 1; then
    su postgres -c "createdb -p $PG_PORT -O sourcegram sourcegram"
  fi
  su postgres -c "psql -qAt -p $PG_PORT -d sourcegram -c 'SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS pgcrypto'" >/dev/null
}

install_tansu() {
  if [[ -x "$TANSU_BIN" ]]; then return; fi
  install_build_tools
  say "building tansu $TANSU_VERSION into $TANSU_ROOT (once; takes 10-20 minutes on 2 cores)"
  mkdir -p "$CACHE_DIR/logs"
  cargo install "tansu@$TANSU_VERSION" --locked --features libsql --root "$TANSU_ROOT" \
    >"$CACHE_DIR/logs/tansu-build.log" 2>&1 || { tail -30 "$CACHE_DIR/logs/tansu-build.log" >&2; exit 1; }
}

broker_pid() {
  local pidfile="$STATE_DIR/tansu/tansu.pid"
  [[ -f "$pidfile" ]] && alive "$(cat "$pidfile")" && cat "$pidfile"
}

start_broker() {
  install_tansu
  mkdir -p "$STATE_DIR/tansu"
  if broker_pid >/dev/null; then
    :
  elif wait_for_port "$KAFKA_PORT" 0; then
    say "something else already listens on $KAFKA_PORT; using it as the broker"
  else
    say "starting tansu on 127.0.0.1:$KAFKA_PORT"
    (
      cd "$STATE_DIR/tansu"
      nohup "$TANSU_BIN" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine sqlite://tansu.db >>tansu.log 2>&1 &
      echo $! >tansu.pid
    )
  fi
  wait_for_port "$KAFKA_PORT" 30 || { say "the broker did not answer on port $KAFKA_PORT"; tail -20 "$STATE_DIR/tansu/tansu.log" >&2; exit 1; }
  index_broker_store
  if ! "$TANSU_BIN" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT" 2>/dev/null | grep -q "\"name\":\"$TOPIC\""; then
    "$TANSU_BIN" topic create "$TOPIC" --partitions "$PARTITIONS" --broker "tcp://127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1 ||
      say "topic $TOPIC: create answered an error (it may exist already)"
  fi
}

# tansu 0.6's SQLite schema has no index on its `header` table, and every
# fetched message looks its headers up by (topition, offset_id): each fetch then
# scans every header the broker ever stored, so consumers slow down as the store
# grows (and, with them, the producers they share the database with). The index
# below turns that scan into a lookup. tansu creates its tables when it starts;
# an index it does not know about changes nothing else for it.
index_broker_store() {
  local db="$STATE_DIR/tansu/tansu.db"
  [[ -f "$db" ]] || return 0
  command -v sqlite3 >/dev/null || apt_install sqlite3
  for _ in $(seq 1 50); do
    if sqlite3 -cmd '.timeout 5000' "$db" \
      'CREATE INDEX IF NOT EXISTS header_topition_offset ON header (topition, offset_id)' 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  say "could not index the broker's header table; consumers will slow down as the store grows"
}

stop_broker() {
  local pid
  if pid=$(broker_pid); then
    say "stopping tansu (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 50); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -KILL "$pid"
    rm -f "$STATE_DIR/tansu/tansu.pid"
  fi
}

print_urls() {
  cat <<EOF2
POSTGRES_URL=$POSTGRES_URL
KAFKA_BROKERS=$KAFKA_BROKERS
KAFKA_TOPIC=$TOPIC
EOF2
}

mkdir -p "$STATE_DIR"
case "${1:-start}" in
  start)
    start_postgres
    start_broker
    print_urls
    ;;
  stop)
    stop_broker
    if [[ -f "$STATE_DIR/postgres.started-by-script" ]]; then
      say "stopping PostgreSQL $PG_VERSION"
      pg_ctlcluster --skip-systemctl-redirect "$PG_VERSION" main stop
      rm -f "$STATE_DIR/postgres.started-by-script"
    fi
    ;;
  stop-broker)
    stop_broker
    ;;
  restart-broker)
    # Only a broker this script started (same state directory) can be restarted;
    # anything else on the port would make a restart check prove nothing.
    if ! broker_pid >/dev/null; then
      say "restart-broker: no broker started by this script under $STATE_DIR"
      exit 1
    fi
    stop_broker
    start_broker
    ;;
  prune)
    # Names the tests make (prefix, "_", 32 hex digits) and the scripts make
    # (drill_, hostile_, bench_ and a timestamp, with their suffixes).
    pattern='^[a-z0-9_]+_[0-9a-f]{32}$|^(drill|hostile|bench)_[0-9]+(_[a-z]+)?$'
    start_postgres >/dev/null
    drops=$(psql "$POSTGRES_URL" -qAtX -c "SELECT format('DROP SCHEMA %I CASCADE;', nspname)
                                           FROM pg_namespace WHERE nspname ~ '$pattern'")
    # One session, one statement (and transaction) per schema.
    [[ -z "$drops" ]] || PGOPTIONS='-c client_min_messages=warning' \
      psql "$POSTGRES_URL" -qAtX -v ON_ERROR_STOP=1 <<<"$drops" >/dev/null
    say "dropped $(grep -c . <<<"$drops" || true) schemas"
    ;;
  status)
    if wait_for_port "$PG_PORT" 0; then echo "postgres: up on 127.0.0.1:$PG_PORT"; else echo "postgres: down"; fi
    if wait_for_port "$KAFKA_PORT" 0; then echo "broker: up on 127.0.0.1:$KAFKA_PORT${pid:+}"; else echo "broker: down"; fi
    ;;
  *)
    sed -n '2,10p' "$0" >&2
    exit 2
    ;;
esac
