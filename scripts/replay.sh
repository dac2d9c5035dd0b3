#!/usr/bin/env bash
# Rebuilds the read model from the event store: starts a replay on the
# projection host and follows it to the end. Progress is one line updated in
# place on a terminal, plain lines otherwise. Exits non-zero if the replay fails.
#
#   ADMIN_TOKEN=... scripts/replay.sh        (PROJECTION_URL defaults to http://127.0.0.1:8083)
set -euo pipefail
url="${PROJECTION_URL:-http://127.0.0.1:8083}"
: "${ADMIN_TOKEN:?set ADMIN_TOKEN to the admin token of the projection host}"
auth=(-H "Authorization: Bearer $ADMIN_TOKEN")

field() { # json name -> value (numbers, strings, null)
  sed -n "s/.*\"$2\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" <<<"$1" | tr -d '"'
}

answer=$(curl -sS -w '\n%{http_code}' -X POST "${auth[@]}" "$url/admin/replay") || {
  echo "replay: cannot reach the projection host at $url" >&2; exit 1; }
status=${answer##*$'\n'}
body=${answer%$'\n'*}
if [[ "$status" != 202 ]]; then
  echo "replay: the projection host refused ($status): $(field "$body" detail)" >&2
  exit 1
fi

tty=0; [[ -t 1 ]] && tty=1
last=""
while :; do
  body=$(curl -sS --fail-with-body "${auth[@]}" "$url/admin/replay") || {
    echo; echo "replay: lost the projection host while following the replay" >&2; exit 1; }
  state=$(field "$body" state); phase=$(field "$body" phase)
  done_=$(field "$body" events_done); total=$(field "$body" events_total)
  rate=$(field "$body" events_per_second); elapsed=$(field "$body" elapsed_ms); eta=$(field "$body" eta_ms)
  eta_text="-"; [[ "$eta" =~ ^[0-9]+$ ]] && eta_text="$((eta / 1000))s"
  line="replay: $phase  $done_/$total events  $rate events/s  elapsed $((elapsed / 1000))s  remaining $eta_text"
  if ((tty)); then printf '\r\033[K%s' "$line"; elif [[ "$line" != "$last" ]]; then echo "$line"; fi
  last=$line
  case "$state" in
    running) sleep 0.5 ;;
    succeeded) ((tty)) && echo; echo "replay: done; the rebuilt read model is live"; exit 0 ;;
    *) ((tty)) && echo; echo "replay FAILED: $(field "$body" error); the live read model is untouched" >&2; exit 1 ;;
  esac
done
