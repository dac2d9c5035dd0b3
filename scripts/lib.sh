# Helpers the scripts source; defines functions only.
lib_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# A process that has exited but not yet been reaped (a zombie) counts as gone.
alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ -n "$s" && "$s" != Z* ]]; }

# stack_init <kafka port> <first of three HTTP ports>: a work directory ($work)
# and the environment of a stack of its own: state, broker and host ports, profile.
stack_init() {
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sourcegram/target}"
  work="$(mktemp -d)"
  export SOURCEGRAM_STATE_DIR="$work/state" SOURCEGRAM_KAFKA_PORT="$1"
  export COMMAND_PORT="$2" QUERY_PORT="$(($2 + 1))" PROJECTION_PORT="$(($2 + 2))"
  export SOURCEGRAM_PROFILE="${SOURCEGRAM_PROFILE:-release}"
}

# stack_up <schema prefix>: starts the services and the three hosts on schemas and
# consumer groups of their own; sets POSTGRES_URL, $schema and $bin (the hosts'
# binaries) and exports the secrets.
stack_up() {
  eval "$("$lib_dir/services.sh" start)"
  schema="$1_$(date +%s)"
  psql "$POSTGRES_URL" -qAtX -c "CREATE SCHEMA $schema"
  local url="$POSTGRES_URL?options=-csearch_path%3D$schema"
  export EVENT_STORE_URL="$url" RECORDS_URL="$url" KAFKA_TOPIC
  export READ_MODEL_SCHEMA="${schema}_rm" NOTIFICATIONS_SCHEMA="${schema}_nt"
  export READ_MODEL_GROUP="$schema-rm" NOTIFICATIONS_GROUP="$schema-nt"
  "$lib_dir/up.sh" >/dev/null
  set -a; source "$SOURCEGRAM_STATE_DIR/secrets.env"; set +a
  bin="$CARGO_TARGET_DIR/$SOURCEGRAM_PROFILE"
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
