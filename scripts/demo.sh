#!/usr/bin/env bash
# demo.sh: the quick start. Starts (or reuses) the throwaway PostgreSQL,
# migrates a "demo" outbox, runs the relay with the stdout sink, writes sample
# business transactions through the SDK and shows their events arriving. It
# stops by itself and leaves only the throwaway cluster running
# (`make services-down` stops it). DATABASE_URL, when set, is used instead.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if [ -z "${DATABASE_URL:-}" ]; then
	scripts/services.sh pg
	DATABASE_URL="$(scripts/services.sh url)"
fi
export DATABASE_URL

echo "== building outbox"
go build -o bin/outbox ./cmd/outbox
go build -o bin/demo ./examples/demo

echo "== outbox migrate up --schema demo"
bin/outbox migrate up --schema demo --publication demo_events

cfg="$(mktemp)"
out="$(mktemp)"
cat >"$cfg" <<YAML
database:
  url: \${DATABASE_URL}
  schema: demo
  slot: demo_relay
  publication: demo_events
admin:
  listen: 127.0.0.1:0
log:
  format: text
sinks:
  - name: console
    type: stdout
routes:
  - name: orders
    match: "order.*"
    sink: console
    destination: "orders.{{.EventType}}"
default_route:
  drop: true
YAML

relay_pid=""
cleanup() {
	if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
		kill -TERM "$relay_pid" 2>/dev/null || true
		wait "$relay_pid" 2>/dev/null || true
	fi
	# an idle slot would keep WAL; the next demo creates it again
	psql "$DATABASE_URL" -qAtc "SELECT pg_drop_replication_slot('demo_relay') FROM pg_replication_slots WHERE slot_name = 'demo_relay' AND NOT active" >/dev/null 2>&1 || true
	rm -f "$cfg" "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== outbox relay (stdout sink): events appear below as JSON lines"
bin/outbox relay --config "$cfg" --log-level warn >"$out" &
relay_pid=$!
tail -n +1 -f "$out" --pid "$relay_pid" &
sleep 1

echo "== writing sample business transactions through the SDK"
bin/demo --schema demo --orders 5
sleep 1.5
echo "== stopping the relay (SIGTERM: finishes in-flight events, confirms its position)"
kill -TERM "$relay_pid"
wait "$relay_pid" || true
relay_pid=""
delivered="$(psql "$DATABASE_URL" -qAtc "SELECT count(*) FROM demo.events WHERE delivered_at IS NOT NULL")"
pending="$(psql "$DATABASE_URL" -qAtc "SELECT count(*) FROM demo.events WHERE delivered_at IS NULL")"
echo "== done: $delivered events delivered, $pending undelivered in demo.events"
echo "   (order 3 was rolled back: its events never reached the outbox)"
