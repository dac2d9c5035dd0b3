#!/usr/bin/env bash
# Starts (installing first, if missing) the real services Sourcegram's hosts and
# tests use, on loopback only: PostgreSQL from Debian's packages, Apache Kafka,
# one combined broker and controller run from the project's own jars (see
# scripts/kafka/pom.xml), and FerretDB, a server that speaks MongoDB's wire
# protocol and stores documents in PostgreSQL, built once from
# scripts/ferretdb/ when Go is installed (without Go, it is left out and the
# MongoDB tests are skipped). Running it twice is harmless.
#
#   scripts/services.sh [start]        install if missing, start, create what the hosts need
#   scripts/services.sh stop           stop only what this script started
#                                      (FerretDB, Kafka, then PostgreSQL)
#   scripts/services.sh stop-broker    stop only the broker this script started
#   scripts/services.sh restart-broker stop and start the broker (its data survives)
#   scripts/services.sh status         what is up
#   scripts/services.sh prune          drop the schemas, topics and MongoDB databases
#                                      that tests, drills and benches left
#                                      (scripts/test.sh cleans up after itself; a bare
#                                      cargo test does not); run it when no tests run
#                                      against the same services
#   scripts/services.sh fetch-broker   only fetch Kafka's jars; prints their directory
set -euo pipefail
source "$(dirname "$0")/lib.sh"

CACHE_DIR="${SOURCEGRAM_CACHE_DIR:-$HOME/.cache/sourcegram}"
STATE_DIR="${SOURCEGRAM_STATE_DIR:-$CACHE_DIR/state}"
KAFKA_VERSION="$(kafka_version)"
KAFKA_HOME="$(kafka_home)"
KAFKA_STATE="$STATE_DIR/kafka"
KAFKA_PORT="${SOURCEGRAM_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${SOURCEGRAM_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
PG_PORT="${SOURCEGRAM_PG_PORT:-5432}"
PG_VERSION=15
TOPIC="${KAFKA_TOPIC:-post-events}"
# Three partitions let up to three instances of a projection host share the
# work, and keep the broker's per-partition cost (files, fetch sessions,
# replica state) small on a 2-core machine.
PARTITIONS="${SOURCEGRAM_PARTITIONS:-3}"
POSTGRES_URL="postgres://sourcegram:sourcegram@127.0.0.1:$PG_PORT/sourcegram"
KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
# FerretDB: the version scripts/ferretdb/go.mod pins, the binary built from it
# (outside the clone, like Kafka's jars), its state, its port, and the
# PostgreSQL database it keeps every MongoDB database in (one schema each).
FERRETDB_SRC="$lib_dir/ferretdb"
FERRETDB_VERSION="$(sed -n 's:^require github.com/FerretDB/FerretDB v\(.*\)$:\1:p' "$FERRETDB_SRC/go.mod")"
FERRETDB_HOME="$CACHE_DIR/ferretdb-$FERRETDB_VERSION"
FERRETDB_BIN="$FERRETDB_HOME/ferretdb"
FERRETDB_STATE="$STATE_DIR/ferretdb"
MONGO_PORT="${SOURCEGRAM_MONGO_PORT:-27017}"
FERRETDB_POSTGRES_URL="postgres://sourcegram:sourcegram@127.0.0.1:$PG_PORT/ferretdb"
# Set by start_ferretdb once a MongoDB wire-protocol server answers.
MONGODB_URL=""

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
  # The hosts' build compiles the bundled librdkafka with these, and the
  # scripts talk to the hosts with curl. Nothing here needs them, but every
  # caller of `start` goes on to build or call the hosts.
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
  # FerretDB keeps its data in a database of its own, so that its schemas (one
  # per MongoDB database) never mix with the event stores' and read models'.
  local db
  for db in sourcegram ferretdb; do
    if ! su postgres -c "psql -qAt -p $PG_PORT -c \"SELECT 1 FROM pg_database WHERE datname = '$db'\"" | grep -q 1; then
      su postgres -c "createdb -p $PG_PORT -O sourcegram $db"
    fi
  done
  su postgres -c "psql -qAt -p $PG_PORT -d sourcegram -c 'SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS pgcrypto'" >/dev/null
}

install_java() {
  local missing=()
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  if ((${#missing[@]})); then apt_install "${missing[@]}"; fi
}

# Kafka's jars, fetched once into $KAFKA_HOME/lib. The marker holds the
# checksum of the pom they came from: a fetch cut short leaves no marker and is
# redone, and so is one from a pom that has changed since.
fetch_kafka() {
  local pom="$lib_dir/kafka/pom.xml" sum
  sum=$(sha256sum "$pom" | cut -d' ' -f1)
  if [[ -f "$KAFKA_HOME/lib.complete" && "$(cat "$KAFKA_HOME/lib.complete")" == "$sum" ]]; then return; fi
  install_java
  say "fetching Apache Kafka $KAFKA_VERSION's jars into $KAFKA_HOME/lib (once; about 55 MB)"
  rm -rf "${KAFKA_HOME:?}/lib" "$KAFKA_HOME/lib.complete"
  mkdir -p "$KAFKA_HOME"
  if ! mvn -B -q -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$KAFKA_HOME/lib" >"$KAFKA_HOME/fetch.log" 2>&1; then
    tail -30 "$KAFKA_HOME/fetch.log" >&2
    say "fetching Kafka's jars failed (the whole log: $KAFKA_HOME/fetch.log)"
    exit 1
  fi
  echo "$sum" >"$KAFKA_HOME/lib.complete"
}

# owned_pid <pid file> <prefix> <infix>: the pid in the file, if that process
# still runs and its command line starts with <prefix> and contains <infix>,
# so that a pid reused by another process is not taken for ours.
owned_pid() {
  local pid
  [[ -f "$1" ]] || return 1
  pid=$(cat "$1")
  alive "$pid" || return 1
  [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" == "$2"*"$3"* ]] || return 1
  echo "$pid"
}

# stop_owned <name> <pid> <seconds>: a clean stop (SIGTERM), and a kill when
# that takes longer than <seconds>; returns once the process is gone, since
# until then it holds its ports and the next start would fail.
stop_owned() {
  say "stopping $1 (pid $2)"
  kill -TERM "$2"
  for _ in $(seq 1 $(($3 * 10))); do alive "$2" || break; sleep 0.1; done
  if alive "$2"; then
    say "$1 did not stop within $3 s; killing it"
    kill -KILL "$2"
    for _ in $(seq 1 50); do alive "$2" || break; sleep 0.1; done
  fi
}

# The pid of the broker this script started under $STATE_DIR, if it still runs.
# The command line is checked too, so a pid reused by another process after a
# reboot is not taken for the broker.
broker_pid() { owned_pid "$KAFKA_STATE/kafka.pid" "" "kafka.Kafka $KAFKA_STATE/server.properties"; }

# The broker's configuration, written on every start so that a change of ports
# takes effect; the data directory and the cluster id stay.
write_broker_config() {
  mkdir -p "$KAFKA_STATE/data"
  cat >"$KAFKA_STATE/server.properties" <<EOF
# Written by scripts/services.sh on every start; edits here are overwritten.
# One node that is both broker and controller (KRaft), on loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_STATE/data
# A single node holds the only copy of everything, internal topics included.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# A consumer group's first member gets its partitions at once instead of after 3 s.
group.initial.rebalance.delay.ms=0
# Topics exist only when created on purpose: a misspelt topic fails loudly.
auto.create.topics.enable=false
# Tests delete the topics they create.
delete.topic.enable=true
EOF
  cat >"$KAFKA_STATE/log4j2.properties" <<EOF
# Written by scripts/services.sh on every start. The broker's log, in a file
# of at most 4 x 20 MB. Partition state changes and request traces, one line
# per partition or request, stay at WARN: tests create many topics. So do the
# dumps of every setting each client and server logs as it starts;
# server.properties above says what was set.
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = $KAFKA_STATE/kafka.log
appender.file.filePattern = $KAFKA_STATE/kafka.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
logger.statechange.name = state.change.logger
logger.statechange.level = warn
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
EOF
}

# Formats the data directory once, with a cluster id kept in the state
# directory; -g leaves a directory that is formatted already alone.
format_storage() {
  [[ -f "$KAFKA_STATE/data/meta.properties" ]] && return 0
  local id_file="$KAFKA_STATE/cluster-id"
  if [[ ! -s "$id_file" ]]; then
    kafka_tool kafka.tools.StorageTool random-uuid >"$id_file.new"
    mv "$id_file.new" "$id_file"
  fi
  say "formatting the broker's storage under $KAFKA_STATE/data (cluster $(cat "$id_file"))"
  kafka_tool kafka.tools.StorageTool format -t "$(cat "$id_file")" -c "$KAFKA_STATE/server.properties" -g >/dev/null
}

# Runs the check until it succeeds; fails after `seconds`, or as soon as the
# process started for it (pid, empty when none was) has exited.
wait_until() { # pid seconds interval check...
  local pid=$1 deadline=$((SECONDS + $2)) interval=$3
  shift 3
  until "$@"; do
    if [[ -n "$pid" ]] && ! alive "$pid"; then return 1; fi
    if ((SECONDS >= deadline)); then return 1; fi
    sleep "$interval"
  done
}

# Waits until the broker answers a metadata request.
# not_started <name> <pid> <what it did not do> <log>: says why a server we
# started is not up (it exited, or it never answered) and shows its log's end.
not_started() {
  if [[ -n "$2" ]] && ! alive "$2"; then
    say "$1 exited while starting"
  else
    say "$1 did not $3"
  fi
  tail -5 "$4" >&2 2>/dev/null || true
}

wait_for_broker() { wait_until "$1" "$2" 0.5 kafka_answers 127.0.0.1 "$KAFKA_PORT"; }

# Whether a server must be started on PORT: not if ours already runs (PID_FN
# prints its pid, which goes in the caller's `pid`) or another server answers
# there (ANSWERS_FN host port); a port held by anything else ends the script.
must_start() { # what port pid_fn answers_fn port_variable
  local what=$1 port=$2 pid_fn=$3 answers_fn=$4 variable=$5
  if pid=$("$pid_fn"); then return 1; fi
  pid=""
  if "$answers_fn" 127.0.0.1 "$port"; then
    say "a $what not started from $STATE_DIR answers on $port; using it"
    return 1
  fi
  if wait_for_port "$port" 0; then
    say "something that does not answer as a $what listens on $port; stop it or set $variable"
    exit 1
  fi
}

# The status line of a server on PORT: ours up (or starting, or stuck),
# another server answering, or something else holding the port. Prints
# nothing and fails when nothing listens.
report_server() { # label port pid_fn answers_fn ours foreign not_answering stuck_hint
  local label=$1 port=$2 pid_fn=$3 answers_fn=$4 pid
  if pid=$("$pid_fn"); then
    if "$answers_fn" 127.0.0.1 "$port"; then
      echo "$label: up on 127.0.0.1:$port ($5, pid $pid)"
    else
      echo "$label: starting or stuck (pid $pid runs, but 127.0.0.1:$port $7; $8)"
    fi
  elif "$answers_fn" 127.0.0.1 "$port"; then
    echo "$label: up on 127.0.0.1:$port ($6 this script did not start from $STATE_DIR)"
  elif wait_for_port "$port" 0; then
    echo "$label: down (something listens on 127.0.0.1:$port but $7)"
  else
    return 1
  fi
}

start_broker() {
  fetch_kafka
  mkdir -p "$KAFKA_STATE"
  local pid=""
  if must_start "Kafka broker" "$KAFKA_PORT" broker_pid kafka_answers SOURCEGRAM_KAFKA_PORT; then
    write_broker_config
    format_storage
    say "starting Apache Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller on $CONTROLLER_PORT)"
    # The JVM's own output (a crash before logging starts, say) goes to
    # kafka.out; the broker's log goes to kafka.log.
    nohup java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$KAFKA_STATE/log4j2.properties" -cp "$KAFKA_HOME/lib/*" \
      kafka.Kafka "$KAFKA_STATE/server.properties" >>"$KAFKA_STATE/kafka.out" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$KAFKA_STATE/kafka.pid"
  fi
  if ! wait_for_broker "$pid" 60; then
    not_started "the broker" "$pid" "answer a metadata request on port $KAFKA_PORT within 60 s" "$KAFKA_STATE/kafka.out"
    grep -E '\] (ERROR|FATAL) ' "$KAFKA_STATE/kafka.log" 2>/dev/null | tail -5 >&2 || true
    exit 1
  fi
  KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT" create_topic "$TOPIC" "$PARTITIONS" ||
    { say "could not create topic $TOPIC"; exit 1; }
}

# A clean stop (SIGTERM) lets the broker close its logs, so the next start
# skips recovering them; one that has not stopped after 30 s is killed.
stop_broker() {
  local pid
  if pid=$(broker_pid); then stop_owned Kafka "$pid" 30; fi
  rm -f "$KAFKA_STATE/kafka.pid"
}

# say_loud <message>: one line that stands out in a long log.
say_loud() { printf '\nservices: !!!!! %s !!!!!\n\n' "$*" >&2; }

# The hash of the sources the FerretDB binary is built from; the marker next
# to the binary holds the hash it was built from.
ferretdb_sources_sum() {
  cat "$FERRETDB_SRC/go.mod" "$FERRETDB_SRC/go.sum" "$FERRETDB_SRC/main.go" | sha256sum | cut -d' ' -f1
}

# Builds FerretDB once into $FERRETDB_BIN, again only when scripts/ferretdb/
# has changed. Fails (after saying why) when Go is missing, older than the
# module needs, or the build fails; the caller then goes on without FerretDB.
build_ferretdb() {
  local sum need have
  sum=$(ferretdb_sources_sum)
  if [[ -x "$FERRETDB_BIN" && -f "$FERRETDB_HOME/built-from" && "$(cat "$FERRETDB_HOME/built-from")" == "$sum" ]]; then
    return 0
  fi
  if ! command -v go >/dev/null; then
    say_loud "no Go toolchain (go is not on PATH), so FerretDB is not built and the MongoDB test legs will be SKIPPED"
    return 1
  fi
  # The module's go line says which Go it needs. GOTOOLCHAIN=local below keeps
  # an older go from fetching a newer toolchain by itself.
  need=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$FERRETDB_SRC/go.mod")
  have=$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null | sed 's/^go//; s/[^0-9.].*//')
  if [[ -z "$have" || "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]]; then
    say_loud "Go ${have:-of unknown version} is older than the $need FerretDB $FERRETDB_VERSION needs, so FerretDB is not built and the MongoDB test legs will be SKIPPED"
    return 1
  fi
  mkdir -p "$FERRETDB_HOME"
  rm -f "$FERRETDB_HOME/built-from"
  say "building FerretDB $FERRETDB_VERSION into $FERRETDB_BIN (once; a few minutes on 2 cores)"
  # No cgo and no SQLite backend (ferretdb_no_sqlite): only the PostgreSQL
  # backend is used, and SQLite's Go translation is most of the build. The
  # binary is written next to its final place and moved there when complete,
  # so a build cut short leaves no binary that looks finished.
  if ! (cd "$FERRETDB_SRC" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" \
    go build -tags ferretdb_no_sqlite -trimpath -o "$FERRETDB_BIN.new" .) >"$FERRETDB_HOME/build.log" 2>&1; then
    tail -30 "$FERRETDB_HOME/build.log" >&2
    say_loud "building FerretDB failed (the whole log: $FERRETDB_HOME/build.log), so the MongoDB test legs will be SKIPPED"
    return 1
  fi
  mv "$FERRETDB_BIN.new" "$FERRETDB_BIN"
  echo "$sum" >"$FERRETDB_HOME/built-from"
}

# The pid of the FerretDB this script started under $STATE_DIR, if it still
# runs; the command line is checked so that a reused pid is not taken for it.
ferretdb_pid() { owned_pid "$FERRETDB_STATE/ferretdb.pid" "$FERRETDB_BIN -listen-addr " ""; }

# Waits until the server on the MongoDB port answers a ping.
wait_for_mongo() { wait_until "$1" "$2" 0.2 mongo_answers 127.0.0.1 "$MONGO_PORT"; }

# Starts FerretDB unless a MongoDB wire-protocol server answers on the port
# already, and sets MONGODB_URL once one answers. Without Go, or when the
# build fails, it says so loudly and leaves MONGODB_URL empty: PostgreSQL and
# Kafka are still started, and the MongoDB test legs report themselves skipped.
start_ferretdb() {
  local pid=""
  if must_start "MongoDB wire-protocol server" "$MONGO_PORT" ferretdb_pid mongo_answers SOURCEGRAM_MONGO_PORT; then
    build_ferretdb || return 0
    mkdir -p "$FERRETDB_STATE"
    # One earlier log is kept; the server logs each connection at info level,
    # so by default only warnings and errors are written.
    [[ ! -f "$FERRETDB_STATE/ferretdb.log" ]] || mv "$FERRETDB_STATE/ferretdb.log" "$FERRETDB_STATE/ferretdb.log.1"
    say "starting FerretDB $FERRETDB_VERSION on 127.0.0.1:$MONGO_PORT (data in PostgreSQL database ferretdb)"
    # The PostgreSQL URL, password included, goes in the environment rather
    # than on the command line, where every user's ps would show it.
    FERRETDB_POSTGRESQL_URL="$FERRETDB_POSTGRES_URL" nohup "$FERRETDB_BIN" -listen-addr "127.0.0.1:$MONGO_PORT" \
      -log-level "${SOURCEGRAM_FERRETDB_LOG_LEVEL:-warn}" >>"$FERRETDB_STATE/ferretdb.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$FERRETDB_STATE/ferretdb.pid"
  fi
  if ! wait_for_mongo "$pid" 30; then
    not_started FerretDB "$pid" "answer a ping on port $MONGO_PORT within 30 s" "$FERRETDB_STATE/ferretdb.log"
    exit 1
  fi
  MONGODB_URL="mongodb://127.0.0.1:$MONGO_PORT/"
}

# A clean stop (SIGTERM) closes the listener, waits for open connections and
# closes the PostgreSQL pool; one that has not stopped after 10 s is killed.
stop_ferretdb() {
  local pid
  if pid=$(ferretdb_pid); then stop_owned FerretDB "$pid" 10; fi
  rm -f "$FERRETDB_STATE/ferretdb.pid"
}

print_urls() {
  cat <<EOF2
POSTGRES_URL=$POSTGRES_URL
KAFKA_BROKERS=$KAFKA_BROKERS
KAFKA_TOPIC=$TOPIC
SOURCEGRAM_KAFKA_LIB=$KAFKA_HOME/lib
EOF2
  # Only when a MongoDB wire-protocol server answers: the tests read an unset
  # MONGODB_URL as "skip the MongoDB legs".
  [[ -z "$MONGODB_URL" ]] || echo "MONGODB_URL=$MONGODB_URL"
}

mkdir -p "$STATE_DIR"
case "${1:-start}" in
  start)
    install_build_tools
    start_postgres
    start_broker
    start_ferretdb
    print_urls
    ;;
  stop)
    # FerretDB first: it holds connections to PostgreSQL.
    stop_ferretdb
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
  fetch-broker)
    fetch_kafka
    echo "$KAFKA_HOME/lib"
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
    # (drill_, hostile_, bench_, fuzz_ and a timestamp, with their suffixes).
    pattern='^[a-z0-9_]+_[0-9a-f]{32}$|^(drill|hostile|bench|fuzz)_[0-9]+(_[a-z]+)*$'
    start_postgres >/dev/null
    say "dropped $(schemas_matching "$POSTGRES_URL" "$pattern" | drop_schemas "$POSTGRES_URL") schemas"
    # The MongoDB databases tests make on FerretDB (the same names), through
    # the running FerretDB when there is one (see ferretdb_drop_databases).
    databases=$(ferretdb_databases "$FERRETDB_POSTGRES_URL" "$pattern")
    say "dropped $(ferretdb_drop_databases "$MONGO_PORT" "$FERRETDB_POSTGRES_URL" <<<"$databases") MongoDB databases"
    # And the topics tests make (prefix, "-", 32 hex digits), in one call.
    start_broker >/dev/null
    say "deleted $(topics_matching '^[a-z0-9-]+-[0-9a-f]{32}$' | delete_topics) topics"
    ;;
  status)
    if wait_for_port "$PG_PORT" 0; then echo "postgres: up on 127.0.0.1:$PG_PORT"; else echo "postgres: down"; fi
    report_server broker "$KAFKA_PORT" broker_pid kafka_answers "Kafka $KAFKA_VERSION, data in $KAFKA_STATE/data" \
      "a Kafka broker" "answers no Kafka metadata request" "see $KAFKA_STATE/kafka.log" || echo "broker: down"
    report_server mongodb "$MONGO_PORT" ferretdb_pid mongo_answers "FerretDB $FERRETDB_VERSION, data in PostgreSQL database ferretdb" \
      "a MongoDB wire-protocol server" "answers no MongoDB ping" "see $FERRETDB_STATE/ferretdb.log" ||
      if [[ ! -x "$FERRETDB_BIN" ]]; then
        echo "mongodb: down (FerretDB is not built yet; start builds it when Go is installed)"
      else
        echo "mongodb: down"
      fi
    ;;
  *)
    # The usage: the comment at the top, up to the first command.
    sed -n '/^set -euo/q; 2,$p' "$0" >&2
    exit 2
    ;;
esac
