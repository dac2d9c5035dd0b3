# Helpers the scripts source; defines functions only.
lib_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# A process that has exited but not yet been reaped (a zombie) counts as gone.
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ -n "$s" && "$s" != Z* ]]; }

# The Kafka version scripts/kafka/pom.xml pins, and the directory its jars are
# copied to (outside the clone, so every clone and every state directory shares
# them). scripts/services.sh fills it; the functions below only read it.
kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$lib_dir/kafka/pom.xml"; }
kafka_home() { echo "${SOURCEGRAM_CACHE_DIR:-$HOME/.cache/sourcegram}/kafka-$(kafka_version)"; }

# kafka_tool <main class> args...: runs one of Kafka's command-line tools (there
# are no bin/*.sh scripts without the release tarball), e.g.
# org.apache.kafka.tools.TopicCommand. The JVM flags trade peak speed for a
# quicker start, which is all a tool that runs for a second needs; its log
# goes to stderr at WARN.
kafka_tool() {
  local home; home="$(kafka_home)"
  if [[ ! -f "$home/lib.complete" ]]; then
    echo "Kafka's jars are not in $home/lib; run scripts/services.sh start first" >&2
    return 1
  fi
  if [[ ! -f "$home/tools-log4j2.properties" ]]; then
    cat >"$home/tools-log4j2.properties" <<'EOF'
status = warn
appender.stderr.type = Console
appender.stderr.name = stderr
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = stderr
EOF
  fi
  java -Xshare:auto -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmx256m \
    -Dlog4j2.configurationFile="$home/tools-log4j2.properties" -cp "$home/lib/*" "$@"
}

# The broker the topic functions talk to: $KAFKA_BROKERS as scripts/services.sh
# prints it, else the one on SOURCEGRAM_KAFKA_PORT.
kafka_brokers() { echo "${KAFKA_BROKERS:-127.0.0.1:${SOURCEGRAM_KAFKA_PORT:-9092}}"; }

# create_topic <name> <partitions>: creates the topic unless it exists. The
# broker creates none on use (auto.create.topics.enable=false).
create_topic() {
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(kafka_brokers)" \
    --create --if-not-exists --topic "$1" --partitions "$2" --replication-factor 1 >/dev/null
}

# delete_topic <name or regular expression>: deletes the topic (or every topic
# the expression matches) and its data.
delete_topic() {
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(kafka_brokers)" \
    --delete --topic "$1" >/dev/null
}

# topics_matching <extended regular expression>: the topics whose names match,
# one a line, sorted.
topics_matching() {
  kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(kafka_brokers)" --list |
    grep -E "$1" | sort || true
}

# delete_topics: deletes the topics named on stdin, one a line, in one call
# (one JVM start, however many), and prints how many.
delete_topics() {
  local topics
  topics=$(grep . || true)
  [[ -z "$topics" ]] || delete_topic "^($(paste -sd'|' <<<"$topics"))\$"
  grep -c . <<<"$topics" || true
}

# schemas_matching <PostgreSQL URL> <extended regular expression>: the schemas
# of that database whose names match, one a line, sorted.
schemas_matching() {
  psql "$1" -qAtX -c "SELECT nspname FROM pg_namespace WHERE nspname ~ '$2' ORDER BY 1"
}

# drop_schemas <PostgreSQL URL>: drops the schemas named on stdin, one a line
# (one session, one statement and transaction each), and prints how many.
drop_schemas() {
  local schemas
  schemas=$(grep . || true)
  if [[ -n "$schemas" ]]; then
    sed 's/.*/DROP SCHEMA IF EXISTS "&" CASCADE;/' <<<"$schemas" |
      PGOPTIONS='-c client_min_messages=warning' psql "$1" -qAtX -v ON_ERROR_STOP=1 >/dev/null
  fi
  grep -c . <<<"$schemas" || true
}

# kafka_answers <host> <port>: succeeds when a Kafka broker there answers a
# metadata request naming at least one broker. An open port alone proves
# little: a starting broker accepts connections before it serves requests, and
# another program may hold the port. The request is written by hand (Metadata
# v4: the oldest version Kafka 4 still serves, and one without the compact
# encodings of later versions) so that checking costs no JVM start.
kafka_answers() {
  local answer
  # 17 bytes: api key 3 (Metadata), version 4, correlation id 0x5347, client id
  # "sg", topics null (all of them), no topic creation. The answer starts with
  # its size, the same correlation id, the throttle time and the broker count.
  # shellcheck disable=SC2016 # the inner shell expands $0 and $1, the host and port
  answer=$(timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "\x00\x00\x00\x11\x00\x03\x00\x04\x00\x00\x53\x47\x00\x02sg\xff\xff\xff\xff\x00" >&3
    head -c 16 <&3 | od -An -tx1' "$1" "$2" 2>/dev/null) || return 1
  answer=$(tr -d ' \n' <<<"$answer")
  [[ ${#answer} == 32 && ${answer:8:8} == 00005347 && ${answer:24:8} != 00000000 ]]
}

# mongo_command <host> <port> <command> <database>: sends the command
# {<command>: 1, $db: "<database>"} to a server that speaks MongoDB's wire
# protocol and succeeds when it answers with ok: 1. Both names must be ASCII
# without quotes or percent signs (the names tests and scripts make are). The
# request is one OP_MSG written by hand, like kafka_answers' metadata request,
# so that neither a driver nor a shell client is needed.
mongo_command() {
  local body msg answer
  # A BSON document: its size, an int32 element (type 0x10) naming the command,
  # a string element (type 0x02) "$db", and a closing zero byte.
  body="\x10$3\x00$(le32 1)\x02\$db\x00$(le32 $((${#4} + 1)))$4\x00\x00"
  body="$(le32 $((4 + 1 + ${#3} + 1 + 4 + 1 + 4 + 4 + ${#4} + 1 + 1)))$body"
  # The header: message size, request id 0x5347, no response-to, opcode 2013
  # (OP_MSG); then no flags and one section of kind 0 holding the document.
  msg="$(le32 $((16 + 4 + 1 + 4 + 1 + ${#3} + 1 + 4 + 1 + 4 + 4 + ${#4} + 1 + 1)))"
  msg="$msg\x47\x53\x00\x00\x00\x00\x00\x00\xdd\x07\x00\x00\x00\x00\x00\x00\x00$body"
  # The answer's size comes first: dd reads those four bytes one at a time, so
  # that nothing of the rest is taken from the socket before head reads it.
  # shellcheck disable=SC2016 # the inner shell expands $0, $1 and $2
  answer=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "%b" "$2" >&3
    size=$(dd bs=1 count=4 <&3 2>/dev/null | od -An -tx1 | tr -d " \n")
    [[ ${#size} == 8 ]] || exit 1
    size=$((16#${size:6:2}${size:4:2}${size:2:2}${size:0:2}))
    ((size > 21 && size < 16777216)) || exit 1
    head -c $((size - 4)) <&3 | od -An -tx1' "$1" "$2" "$msg" 2>/dev/null) || return 1
  answer=$(tr -d ' \n' <<<"$answer")
  # After the size: the server's request id, our request id, opcode 2013, and
  # a document that holds ok: 1.0 (type 0x01, "ok", the double 1.0).
  [[ ${answer:8:16} == 47530000dd070000 && $answer == *016f6b00000000000000f03f* ]]
}

# le32 <n>: n as four little-endian bytes, written as printf %b escapes.
le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)); }

# mongo_answers <host> <port>: succeeds when a MongoDB wire-protocol server
# there answers a ping. An open port alone proves little: another program may
# hold it.
mongo_answers() { mongo_command "$1" "$2" ping admin; }

# ferretdb_databases <PostgreSQL URL of FerretDB's database> <pattern>: the
# MongoDB databases there whose names match the extended regular expression,
# one a line, sorted. FerretDB keeps each MongoDB database as a PostgreSQL
# schema of the same name (a table per collection, and one of its metadata).
ferretdb_databases() { schemas_matching "$@"; }

# ferretdb_drop_databases <MongoDB port> <PostgreSQL URL of FerretDB's
# database>: drops the MongoDB databases named on stdin, one a line, and prints
# how many it dropped. A FerretDB that runs is sent dropDatabase: it keeps
# the list of databases and collections in memory, and a schema dropped behind
# its back stays listed, and can be neither used nor dropped, until it
# restarts. When nothing answers on the port, the schemas are dropped in
# PostgreSQL directly; the next FerretDB to start reads the list afresh.
ferretdb_drop_databases() {
  local name dropped=0 up=""
  mongo_answers 127.0.0.1 "$1" && up=1
  while read -r name; do
    [[ -n "$name" ]] || continue
    if [[ -n "$up" ]]; then
      mongo_command 127.0.0.1 "$1" dropDatabase "$name" || { echo "could not drop MongoDB database $name" >&2; continue; }
    else
      PGOPTIONS='-c client_min_messages=warning' psql "$2" -qAtX -c "DROP SCHEMA IF EXISTS \"$name\" CASCADE" >/dev/null
    fi
    dropped=$((dropped + 1))
  done
  echo "$dropped"
}

# stack_init <kafka port> <first of three HTTP ports>: a work directory ($work)
# and the environment of a stack of its own: state, broker and host ports, profile.
# The broker's controller takes the port after its own; callers space their
# broker ports two apart (19092 bench, 19094 fault drills, 19096 hostile drill,
# 19098 broker restart check, 19100 fuzzing), clear of the stacks' HTTP ports (18xxx).
stack_init() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sourcegram/target}"
  work="$(mktemp -d)"
  export SOURCEGRAM_STATE_DIR="$work/state" SOURCEGRAM_KAFKA_PORT="$1"
  export SOURCEGRAM_KAFKA_CONTROLLER_PORT="$(($1 + 1))"
  export COMMAND_PORT="$2" QUERY_PORT="$(($2 + 1))" PROJECTION_PORT="$(($2 + 2))"
  export SOURCEGRAM_PROFILE="${SOURCEGRAM_PROFILE:-release}"
}

# stack_up <schema prefix>: starts the services and the three hosts on schemas and
# consumer groups of their own; sets POSTGRES_URL, $schema and $bin (the hosts'
# binaries: SOURCEGRAM_BIN_DIR when set, see up.sh) and exports the secrets. The
# event store is PostgreSQL, or MongoDB with SOURCEGRAM_EVENT_STORE=mongodb.
stack_up() {
  eval "$("$lib_dir/services.sh" start)"
  schema="$1_$(date +%s)"
  psql "$POSTGRES_URL" -qAtX -c "CREATE SCHEMA $schema"
  local url="$POSTGRES_URL?options=-csearch_path%3D$schema"
  export EVENT_STORE_URL="$url" RECORDS_URL="$url" KAFKA_TOPIC
  # SOURCEGRAM_EVENT_STORE=mongodb: the event store on the MongoDB wire-protocol
  # server services.sh started, in a database named like the schema.
  if [[ "${SOURCEGRAM_EVENT_STORE:-postgres}" == mongodb ]]; then
    [[ -n "${MONGODB_URL:-}" ]] || { echo "stack_up: no MongoDB server is running (see docs/services.md)" >&2; return 1; }
    EVENT_STORE_URL="${MONGODB_URL%/}/$schema"
  fi
  export READ_MODEL_SCHEMA="${schema}_rm" NOTIFICATIONS_SCHEMA="${schema}_nt"
  export READ_MODEL_GROUP="$schema-rm" NOTIFICATIONS_GROUP="$schema-nt"
  "$lib_dir/up.sh" >/dev/null
  set -a; source "$SOURCEGRAM_STATE_DIR/secrets.env"; set +a
  bin="${SOURCEGRAM_BIN_DIR:-$CARGO_TARGET_DIR/$SOURCEGRAM_PROFILE}"
}

# stack_drop_schemas: drops the schemas stack_up made (the drills keep them
# with DRILL_KEEP set, for inspection).
stack_drop_schemas() {
  [[ -n "${schema:-}" && -z "${DRILL_KEEP:-}" ]] || return 0
  psql "$POSTGRES_URL" -qAtX -c "DROP SCHEMA IF EXISTS $schema CASCADE; DROP SCHEMA IF EXISTS ${schema}_rm CASCADE;
    DROP SCHEMA IF EXISTS ${schema}_nt CASCADE" >/dev/null 2>&1 || true
}

# stack_down: stops what stack_up started.
stack_down() {
  "$lib_dir/down.sh" >/dev/null 2>&1 || true
  "$lib_dir/services.sh" stop >/dev/null 2>&1 || true
}

# Starts the host binary "$bin/NAME" on 127.0.0.1:PORT with the given
# environment, logging to "$work/NAME-PORT.log", and waits up to 30 s for its
# /healthz. Its pid joins the caller's array `pids`.
start_host() { # name port env...
  local name=$1 port=$2; shift 2
  env "$@" LISTEN_ADDR="127.0.0.1:$port" "$bin/$name" >"$work/$name-$port.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  printf '%s did not start:\n' "$name" >&2; cat "$work/$name-$port.log" >&2; exit 1
}

# Stops the host started last by start_host.
stop_last_host() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

# replay_on <port> [seconds]: starts a replay on the projection host at
# 127.0.0.1:<port> (as ADMIN_TOKEN), waits until it is no longer running (at
# most <seconds>, unbounded if none) and sets `progress` to its last answer and
# `replay_ms` to its elapsed time; exits unless it succeeded.
replay_on() {
  local admin=(-fsS -H "Authorization: Bearer $ADMIN_TOKEN" "http://127.0.0.1:$1/admin/replay")
  local limit=${2:-0} started=$SECONDS
  curl -X POST "${admin[@]}" >/dev/null
  while progress=$(curl "${admin[@]}") && grep -q '"state":"running"' <<<"$progress" &&
    (( limit == 0 || SECONDS - started < limit )); do
    sleep 0.2
  done
  grep -q '"state":"succeeded"' <<<"$progress" || { printf 'replay failed: %s\n' "$progress" >&2; exit 1; }
  replay_ms=$(sed -n 's/.*"elapsed_ms":\([0-9]*\).*/\1/p' <<<"$progress")
}
