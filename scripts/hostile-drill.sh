#!/usr/bin/env bash
# The hostile-input drill: a corpus of bad requests against all three hosts.
# Every one must be answered with the expected 4xx (or the connection closed),
# no host may restart, and nothing may change in the stores.
#
# Loopback only, bounded in time. Runs its own hosts, broker and schemas.
#   HOSTILE_FLOOD (2000)   connections opened at once in the flood
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"
FLOOD="${HOSTILE_FLOOD:-2000}"
stack_init "${HOSTILE_KAFKA_PORT:-19096}" 18381
say() { printf 'hostile: %s\n' "$*" >&2; }
trap 'say "failed at line $LINENO: $BASH_COMMAND"' ERR
cleanup() {
  stack_drop_schemas
  stack_down
  rm -rf "$work"
}
trap cleanup EXIT

stack_up hostile
psql_() { psql "$POSTGRES_URL" -qAtX "$@"; }
CMD="http://127.0.0.1:$COMMAND_PORT" QRY="http://127.0.0.1:$QUERY_PORT" PRJ="http://127.0.0.1:$PROJECTION_PORT"
alice=$("$bin/command-host" mint-token alice)
bob=$("$bin/command-host" mint-token bob)
expired=$("$bin/command-host" mint-token alice --ttl-seconds 1)
forged="${alice%?}$([[ "${alice: -1}" == 0 ]] && echo 1 || echo 0)"
other_secret=$(TOKEN_SECRET=not-the-secret "$bin/command-host" mint-token alice)

# The target: one post by alice, seen by the query host.
post=$(curl -fsS -X POST "$CMD/posts" -H "Authorization: Bearer $alice" \
  -H 'Content-Type: application/json' -d '{"message":"target"}' | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
curl -fsS -o /dev/null "$QRY/posts/$post?min_version=1"
pids() { cat "$SOURCEGRAM_STATE_DIR"/hosts/*.pid | tr '\n' ' '; }
pids_before=$(pids)
snapshot() {
  psql_ -c "SELECT (SELECT count(*) FROM $schema.events) || '/' ||
                   (SELECT coalesce(max(position), 0) FROM $schema.events) || '/' ||
                   (SELECT count(*) FROM ${schema}_rm.posts) || '/' ||
                   (SELECT coalesce(sum(version), 0) FROM ${schema}_rm.posts)"
}
before=$(snapshot)
sleep 1.2 # the expired token's second runs out

failures=0 total=0
# check <expected status> <description> curl-arguments...
check() {
  local want=$1 what=$2 got
  shift 2
  got=$(curl -s -o "$work/body" -w '%{http_code}' -m 10 "$@" 2>/dev/null) || got="closed"
  total=$((total + 1))
  if [[ "$got" == "$want" ]]; then
    printf '  ok    %-4s %s\n' "$got" "$what"
  else
    failures=$((failures + 1))
    printf '  FAIL  %-4s %s (expected %s): %s\n' "$got" "$what" "$want" "$(head -c 200 "$work/body" 2>/dev/null)"
  fi
}
json=(-H 'Content-Type: application/json')
auth() { echo "Authorization: Bearer $1"; }

echo "== command host: bodies"
check 400 "malformed JSON" -X POST "$CMD/posts" -H "$(auth "$alice")" "${json[@]}" -d '{"message":'
check 400 "not JSON at all" -X POST "$CMD/posts" -H "$(auth "$alice")" "${json[@]}" -d 'hello'
check 400 "wrong type" -X POST "$CMD/posts" -H "$(auth "$alice")" "${json[@]}" -d '{"message":42}'
check 400 "unknown field" -X POST "$CMD/posts" -H "$(auth "$alice")" "${json[@]}" -d '{"message":"x","author":"bob"}'
check 400 "empty message" -X POST "$CMD/posts" -H "$(auth "$alice")" "${json[@]}" -d '{"message":"   "}'
check 400 "control characters" -X POST "$CMD/posts" -H "$(auth "$alice")" "${json[@]}" -d '{"message":"a\u0007b"}'
printf '{"message":"\xff\xfe"}' >"$work/badutf8"
check 400 "invalid UTF-8" -X POST "$CMD/posts" -H "$(auth "$alice")" "${json[@]}" --data-binary "@$work/badutf8"
python3 -c 'print("["*100000 + "]"*100000)' >"$work/nested"
check 413 "deeply nested JSON (200 kB)" -X POST "$CMD/posts" -H "$(auth "$alice")" "${json[@]}" --data-binary "@$work/nested"
python3 -c 'print("["*5000 + "]"*5000)' >"$work/nested-small"
check 400 "deeply nested JSON (10 kB)" -X POST "$CMD/posts" -H "$(auth "$alice")" "${json[@]}" --data-binary "@$work/nested-small"
head -c 10485760 /dev/zero | tr '\0' 'a' >"$work/big"
check 413 "10 MB body" -X POST "$CMD/posts" -H "$(auth "$alice")" "${json[@]}" --data-binary "@$work/big"
check 415 "text/plain body" -X POST "$CMD/posts" -H "$(auth "$alice")" -H 'Content-Type: text/plain' -d '{"message":"x"}'
check 415 "no content type" -X POST "$CMD/posts" -H "$(auth "$alice")" -H 'Content-Type:' -d '{"message":"x"}'
echo "== command host: identity and ownership"
check 401 "no token" -X POST "$CMD/posts" "${json[@]}" -d '{"message":"x"}'
check 401 "expired token" -X POST "$CMD/posts" -H "$(auth "$expired")" "${json[@]}" -d '{"message":"x"}'
check 401 "forged signature" -X POST "$CMD/posts" -H "$(auth "$forged")" "${json[@]}" -d '{"message":"x"}'
check 401 "token of another secret" -X POST "$CMD/posts" -H "$(auth "$other_secret")" "${json[@]}" -d '{"message":"x"}'
check 401 "garbage token" -X POST "$CMD/posts" -H 'Authorization: Bearer v1~alice~9999999999~zz' "${json[@]}" -d '{"message":"x"}'
check 401 "basic auth" -X POST "$CMD/posts" -H 'Authorization: Basic YWxpY2U6eA==' "${json[@]}" -d '{"message":"x"}'
check 403 "edit someone else's post" -X PUT "$CMD/posts/$post/message" -H "$(auth "$bob")" "${json[@]}" -d '{"message":"mine now"}'
check 403 "delete someone else's post" -X DELETE "$CMD/posts/$post" -H "$(auth "$bob")"
check 412 "stale If-Match" -X PUT "$CMD/posts/$post/message" -H "$(auth "$alice")" -H 'If-Match: "7"' "${json[@]}" -d '{"message":"x"}'
check 400 "garbled If-Match" -X PUT "$CMD/posts/$post/message" -H "$(auth "$alice")" -H 'If-Match: seven' "${json[@]}" -d '{"message":"x"}'
echo "== command host: paths and methods"
check 400 "non-UUID post id" -X POST "$CMD/posts/not-a-uuid/likes" -H "$(auth "$alice")"
check 404 "unknown post" -X POST "$CMD/posts/00000000-0000-4000-8000-000000000000/likes" -H "$(auth "$alice")"
check 404 "dot-dot path" --path-as-is -X POST "$CMD/posts/../admin/replay" -H "$(auth "$alice")"
check 404 "encoded dot-dot path" --path-as-is -X POST "$CMD/posts/%2e%2e/%2e%2e/etc/passwd" -H "$(auth "$alice")"
check 405 "wrong method" -X PATCH "$CMD/posts" -H "$(auth "$alice")"
check 404 "unknown route" "$CMD/wp-admin"

echo "== query host"
check 400 "unknown filter" "$QRY/posts?colour=red"
check 400 "negative limit" "$QRY/posts?limit=-1"
check 400 "huge limit" "$QRY/posts?limit=100000000000000000000"
check 400 "forged cursor" "$QRY/posts?cursor=eyJ0IjoxfQ"
check 400 "non-UUID id" "$QRY/posts/1%27%20OR%20%271%27=%271"
check 404 "unknown post" "$QRY/posts/00000000-0000-4000-8000-000000000000"
check 400 "bad min_version" "$QRY/posts/$post?min_version=banana"
check 405 "write on the read side" -X POST "$QRY/posts"
check 404 "dot-dot path" --path-as-is "$QRY/posts/../../etc/passwd"

echo "== projection host"
check 401 "replay without token" -X POST "$PRJ/admin/replay"
check 401 "replay with a wrong token" -X POST "$PRJ/admin/replay" -H 'Authorization: Bearer guess'
check 401 "replay with a user's token" -X POST "$PRJ/admin/replay" -H "$(auth "$alice")"
check 405 "wrong method" -X DELETE "$PRJ/admin/replay"

echo "== connections"
# Slow headers: a client that never finishes its headers is cut off after the
# header read timeout (5 s); a flood of connections does not stop the hosts.
if python3 - "$COMMAND_PORT" "$QUERY_PORT" "$PROJECTION_PORT" "$FLOOD" <<'PY'; then
import socket, sys, time
ports, flood = [int(p) for p in sys.argv[1:4]], int(sys.argv[4])
ok = True
for port in ports:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    s.settimeout(15)
    start = time.monotonic()
    try:
        data = s.recv(4096)
    except socket.timeout:
        data = None
    took = time.monotonic() - start
    if data is None:
        print(f"  FAIL  slow headers on {port}: still open after 15 s"); ok = False
    else:
        print(f"  ok    slow headers on {port}: closed after {took:.1f} s")
    s.close()
held = []
for _ in range(flood):
    try:
        held.append(socket.create_connection(("127.0.0.1", ports[0]), timeout=2))
    except OSError:
        break
def healthz(port):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return c.recv(64).split(b"\r\n")[0].decode()
try:
    line = healthz(ports[0])
except OSError as e:
    line = f"no answer: {e}"
if line.endswith(" 200 OK"):
    print(f"  ok    flood: {len(held)} idle connections open on {ports[0]}; it still answers /healthz")
else:
    print(f"  FAIL  flood: {len(held)} idle connections open on {ports[0]}; /healthz: {line}"); ok = False
sys.exit(0 if ok else 1)
PY
  :
else
  failures=$((failures + 1))
fi
total=$((total + 4))
check 200 "command host still serves" "$CMD/healthz"
check 200 "query host still serves" "$QRY/posts/$post"
check 200 "projection host still serves" "$PRJ/healthz"

after=$(snapshot)
pids_after=$(pids)
echo
if [[ "$before" != "$after" ]]; then
  failures=$((failures + 1)); echo "FAIL: the stores changed: $before -> $after (events/last position/posts/versions)"
else
  echo "stores unchanged ($after: events/last position/posts/versions)"
fi
if [[ "$pids_before" != "$pids_after" ]]; then
  failures=$((failures + 1)); echo "FAIL: a host restarted: $pids_before -> $pids_after"
fi
for pid in $pids_after; do
  alive "$pid" || { failures=$((failures + 1)); echo "FAIL: host pid $pid is gone"; }
done
echo "$((total - failures)) of $total checks passed"
exit $((failures > 0))
