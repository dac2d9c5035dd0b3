#!/usr/bin/env bash
# A curl-only walk through the whole API against running hosts (scripts/up.sh):
# mint tokens, create a post, like, comment, edit, read it back with
# read-your-writes, read notifications and history, delete. Prints every request
# and response, and stops with an error if a status is not the expected one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
STATE_DIR="${SOURCEGRAM_STATE_DIR:-$HOME/.cache/sourcegram/state}"
CMD="${COMMAND_URL:-http://127.0.0.1:8081}"
QRY="${QUERY_URL:-http://127.0.0.1:8082}"
bin="${CARGO_TARGET_DIR:-$HOME/.cache/sourcegram/target}/${SOURCEGRAM_PROFILE:-release}/command-host"
if [[ -z "${TOKEN_SECRET:-}" && -f "$STATE_DIR/secrets.env" ]]; then
  set -a; source "$STATE_DIR/secrets.env"; set +a
fi
: "${TOKEN_SECRET:?set TOKEN_SECRET (scripts/up.sh keeps it in $STATE_DIR/secrets.env)}"
export TOKEN_SECRET
ALICE=$("$bin" mint-token alice --ttl-seconds 600)
BOB=$("$bin" mint-token bob --ttl-seconds 600)

body=""
call() { # expected-status method url token [json]
  local expected=$1 method=$2 url=$3 token=$4 data=${5:-}
  local args=(-sS -X "$method" -w '\n%{http_code}' -H "Authorization: Bearer $token")
  [[ -n "$data" ]] && args+=(-H 'Content-Type: application/json' -d "$data")
  printf '\n> %s %s%s\n' "$method" "$url" "${data:+  $data}"
  local answer; answer=$(curl "${args[@]}" "$url")
  local status=${answer##*$'\n'}
  body=${answer%$'\n'*}
  printf '< %s %s\n' "$status" "$body"
  if [[ "$status" != "$expected" ]]; then
    echo "demo FAILED: expected $expected, got $status" >&2
    exit 1
  fi
}
json() { sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$body" | head -1; }

echo "== alice posts; bob likes and comments; alice edits"
call 201 POST "$CMD/posts" "$ALICE" '{"message":"Hello, Sourcegram!"}'
post=$(json id)
call 200 POST "$CMD/posts/$post/likes" "$BOB"
call 201 POST "$CMD/posts/$post/comments" "$BOB" '{"text":"Welcome!"}'
comment=$(json comment_id)
call 200 PUT "$CMD/posts/$post/message" "$ALICE" '{"message":"Hello, Sourcegram! (edited)"}'
version=$(json version)

echo; echo "== read it back through the query host, waiting for version $version"
call 200 GET "$QRY/posts/$post?min_version=$version" "$ALICE"
call 200 GET "$QRY/posts?author=alice&limit=5" "$ALICE"
call 200 GET "$QRY/posts/$post/comments" "$ALICE"
call 200 GET "$QRY/me/notifications?limit=5" "$ALICE"

echo; echo "== the rules hold"
call 403 PUT "$CMD/posts/$post/message" "$BOB" '{"message":"not mine"}'
call 400 POST "$CMD/posts" "$ALICE" '{"message":"   "}'
call 200 PUT "$CMD/posts/$post/comments/$comment" "$BOB" '{"text":"Welcome aboard!"}'
call 200 DELETE "$CMD/posts/$post/likes" "$BOB"

echo; echo "== history, then delete"
call 200 GET "$CMD/posts/$post/events" "$ALICE"
call 200 DELETE "$CMD/posts/$post" "$ALICE"
version=$(json version)
call 410 GET "$QRY/posts/$post?min_version=$version" "$ALICE"
call 410 POST "$CMD/posts/$post/likes" "$BOB"
echo; echo "demo: every step answered as expected"
