#!/usr/bin/env bash
# Fuzzes the running hosts against their OpenAPI documents (docs/openapi/*.json)
# with Schemathesis: valid and invalid input, the documents' links followed as
# stateful sequences, and every answer checked against the document (status,
# Content-Type, body schema, headers), with no 5xx allowed. The checks and their
# reasons are in scripts/schemathesis.toml. Exits non-zero on any failure.
#
#   scripts/fuzz.sh            fuzz a running system (the URLs below)
#   scripts/fuzz.sh --stack    bring up a private stack (own broker, schemas, ports;
#                              built by up.sh unless SOURCEGRAM_BIN_DIR is set),
#                              fuzz it, tear it down and drop what it made (for CI)
#   scripts/fuzz.sh --long     many more examples per operation (local use); combines
#                              with --stack
#
# Environment:
#   COMMAND_URL / QUERY_URL / PROJECTION_URL   http://127.0.0.1:8081 / 8082 / 8083
#   TOKEN         a user token for the command and query hosts (command-host mint-token);
#                 --stack mints one
#   ADMIN_TOKEN   the projection host's admin token; --stack uses its own
#   FUZZ_HOSTS    which hosts, default "command query projection"
#   FUZZ_MAX_EXAMPLES   test cases per operation and phase (default 25; 500 with --long)
#   FUZZ_SEED     a seed, to repeat a run
#   FUZZ_REPORT_DIR     where the JUnit reports and VCR cassettes go (default: a
#                 temporary directory, printed at the end)
#   FUZZ_KAFKA_PORT     --stack: the private broker's port (19100; its controller
#                 takes the next one); the hosts listen on 18181-18183
#   MIN_VERSION_WAIT_MS --stack: the query host's read-your-writes bound (500 ms here,
#                 so that versions that never come cost little)
#
# Schemathesis (the version scripts/fuzz-requirements.txt pins) is installed once
# into ~/.cache/sourcegram/venv, python3-venv from Debian's packages if missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
say() { printf 'fuzz: %s\n' "$*" >&2; }

stack="" long=""
for arg in "$@"; do
  case "$arg" in
    --stack) stack=1 ;;
    --long) long=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown argument $arg (see --help)"; exit 2 ;;
  esac
done

# --- Schemathesis, once --------------------------------------------------------
venv="${SOURCEGRAM_CACHE_DIR:-$HOME/.cache/sourcegram}/venv"
requirements="$here/fuzz-requirements.txt"
want=$(sed -n 's/^schemathesis==//p' "$requirements")
if [[ ! -x "$venv/bin/st" ]] || [[ "$("$venv/bin/st" --version 2>/dev/null)" != *"version $want" ]]; then
  if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    say "installing python3-venv"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  say "installing Schemathesis $want into $venv"
  [[ -x "$venv/bin/pip" ]] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
fi

# --- what to fuzz --------------------------------------------------------------
max_examples="${FUZZ_MAX_EXAMPLES:-$([[ -n "$long" ]] && echo 500 || echo 25)}"
hosts="${FUZZ_HOSTS:-command query projection}"

cleanup() { :; }
if [[ -n "$stack" ]]; then
  source "$here/lib.sh"
  stack_init "${FUZZ_KAFKA_PORT:-19100}" 18181
  # Read-your-writes waits are bounded by this; a fuzzer asks for versions
  # that never come, so a short bound keeps the run short.
  export MIN_VERSION_WAIT_MS="${MIN_VERSION_WAIT_MS:-500}"
  cleanup() {
    "$here/down.sh" >/dev/null 2>&1 || true
    # The schemas stack_up made, and the ones a replay makes beside the read
    # model's (_next, _retired); with SOURCEGRAM_EVENT_STORE=mongodb, the event
    # store's database too. The topic lives on the stack's own broker, whose
    # data goes with $work.
    if [[ -n "${schema:-}" ]]; then
      schemas_matching "$POSTGRES_URL" "^${schema}(_[a-z]+)*\$" | drop_schemas "$POSTGRES_URL" >/dev/null || true
      if [[ "${SOURCEGRAM_EVENT_STORE:-postgres}" == mongodb ]]; then
        local pg_port="${SOURCEGRAM_PG_PORT:-5432}"
        ferretdb_drop_databases "${SOURCEGRAM_MONGO_PORT:-27017}" \
          "postgres://sourcegram:sourcegram@127.0.0.1:$pg_port/ferretdb" <<<"$schema" >/dev/null || true
      fi
    fi
    stack_down
    rm -rf "$work"
  }
  trap cleanup EXIT
  say "starting a private stack (broker on $SOURCEGRAM_KAFKA_PORT, hosts on $COMMAND_PORT-$PROJECTION_PORT)"
  stack_up fuzz
  COMMAND_URL="http://127.0.0.1:$COMMAND_PORT"
  QUERY_URL="http://127.0.0.1:$QUERY_PORT"
  PROJECTION_URL="http://127.0.0.1:$PROJECTION_PORT"
  TOKEN=$("$bin/command-host" mint-token fuzzer --ttl-seconds 7200)
fi
COMMAND_URL="${COMMAND_URL:-http://127.0.0.1:8081}"
QUERY_URL="${QUERY_URL:-http://127.0.0.1:8082}"
PROJECTION_URL="${PROJECTION_URL:-http://127.0.0.1:8083}"
if [[ -z "${TOKEN:-}" && "$hosts" =~ command|query ]]; then
  say "TOKEN is not set: export a user token (TOKEN_SECRET=... command-host mint-token alice), or use --stack"
  exit 2
fi
if [[ -z "${ADMIN_TOKEN:-}" && "$hosts" == *projection* ]]; then
  say "ADMIN_TOKEN is not set: export the projection host's admin token, or use --stack"
  exit 2
fi
export TOKEN="${TOKEN:-}" ADMIN_TOKEN="${ADMIN_TOKEN:-}"

report_dir="${FUZZ_REPORT_DIR:-$(mktemp -d -t sourcegram-fuzz.XXXXXX)}"
mkdir -p "$report_dir"
# Schemathesis keeps its example database and caches in the working directory:
# run it in the report directory, not in the clone.
cd "$report_dir"

args=(--max-examples "$max_examples" --mode all --phases "examples,coverage,fuzzing,stateful"
  --request-timeout 10 --generation-database none --no-color)
[[ -z "${FUZZ_SEED:-}" ]] || args+=(--seed "$FUZZ_SEED")
[[ -z "$long" ]] || args+=(--continue-on-failure)

failed=()
for host in $hosts; do
  case "$host" in
    command) url="$COMMAND_URL" ;;
    query) url="$QUERY_URL" ;;
    projection) url="$PROJECTION_URL" ;;
    *) say "unknown host $host in FUZZ_HOSTS"; exit 2 ;;
  esac
  say "$host-host at $url: docs/openapi/$host-host.json, $max_examples examples per operation"
  if ! "$venv/bin/st" --config-file "$here/schemathesis.toml" run "$root/docs/openapi/$host-host.json" \
    --url "$url" "${args[@]}" --report junit,vcr \
    --report-junit-path "$report_dir/$host-host.junit.xml" --report-vcr-path "$report_dir/$host-host.vcr.yaml"; then
    failed+=("$host-host")
  fi
done

say "reports: $report_dir"
if ((${#failed[@]})); then
  say "FAILED: ${failed[*]}"
  exit 1
fi
say "every host conforms to its document"
