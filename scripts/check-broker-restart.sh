#!/usr/bin/env bash
# Checks that the broker keeps what it acknowledged across its own restart, as
# the fault drills rely on: create a topic, produce a message to it (acks=all),
# restart the broker with scripts/services.sh (a clean stop, then a start on the
# same data), read the message back, and delete the topic again, as the tests
# do with theirs. It uses a broker of its own (state directory and ports), so
# nothing else is disturbed and nothing else is mistaken for it.
#   CHECK_KAFKA_PORT (19098)  the broker's port; its controller takes the next one
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/lib.sh"
export SOURCEGRAM_STATE_DIR SOURCEGRAM_KAFKA_PORT="${CHECK_KAFKA_PORT:-19098}"
export SOURCEGRAM_KAFKA_CONTROLLER_PORT="$((SOURCEGRAM_KAFKA_PORT + 1))"
export KAFKA_BROKERS="127.0.0.1:$SOURCEGRAM_KAFKA_PORT"
SOURCEGRAM_STATE_DIR="$(mktemp -d)"
trap '"$here/services.sh" stop >/dev/null 2>&1 || true; rm -rf "$SOURCEGRAM_STATE_DIR"' EXIT
topic="restart-check-$(date +%s)-$$"
marker="survives-restart-$RANDOM$RANDOM"

fail() {
  echo "broker restart check FAILED: $*" >&2
  echo "the broker's log, last errors:" >&2
  grep -E '\] (ERROR|FATAL) ' "$SOURCEGRAM_STATE_DIR/kafka/kafka.log" 2>/dev/null | tail -5 >&2 || true
  exit 1
}

"$here/services.sh" start >/dev/null || fail "the broker did not start"
create_topic "$topic" 1 || fail "could not create topic $topic"
# --sync sends the line and waits for the broker's acknowledgement before the
# producer exits; -1 is acks=all.
echo "$marker" | kafka_tool org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$KAFKA_BROKERS" \
  --topic "$topic" --sync --request-required-acks -1 ||
  fail "the broker did not acknowledge the message"
"$here/services.sh" restart-broker >/dev/null || fail "the broker did not come back after its restart"
read_back=$(kafka_tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$KAFKA_BROKERS" \
  --topic "$topic" --from-beginning --max-messages 1 --timeout-ms 30000 2>/dev/null || true)
if [[ "$read_back" == *"$marker"* ]]; then
  echo "broker restart check: the message produced before the restart was read back after it"
else
  fail "the message produced before the restart was not read back after it (read: '${read_back}')"
fi

delete_topic "$topic" || fail "could not delete topic $topic"
# The broker learns of the deletion from the controller's metadata log, a
# moment after the controller has answered.
for _ in $(seq 1 20); do
  listed=$(kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BROKERS" --list)
  grep -qxF "$topic" <<<"$listed" || break
  sleep 0.5
done
if grep -qxF "$topic" <<<"$listed"; then fail "topic $topic is still listed 10 s after its deletion"; fi
echo "broker restart check: topic $topic was deleted"
echo "broker restart check passed"
