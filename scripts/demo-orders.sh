#!/usr/bin/env bash
# demo-orders.sh: the example orders service end to end (`make demo-orders`).
#
#   orders service (examples/orders)      POST /orders ... : order row + event, one transaction
#     -> outbox relay, nats sink          logical replication -> JetStream stream ORDERS_DEMO_<run>
#     -> orders-consumer                  applies each event exactly once (sdk/inbox)
#        (examples/orders-consumer)       then reads the stream again: everything is skipped
#
# Starts (or reuses) the throwaway PostgreSQL of scripts/services.sh, uses
# NATS on 127.0.0.1:4222 (or NATS_URL; when none is running and nats-server is
# installed, starts a private one on a free port and stops it at the end). It
# ends by itself in well under a minute and leaves nothing running but the
# throwaway cluster (`make services-down` stops it); the stream and the slot
# it created are removed. The stream's name and subjects are this run's own, so
# two checkouts sharing a NATS server do not disturb each other. DATABASE_URL,
# when set, is used instead.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

schema=orders_outbox # the service's outbox
app_schema=shop      # the service's orders table
consumer_schema=orders_consumer
slot=orders_demo_relay
publication=orders_demo_events
run="$(date +%H%M%S)_$$"
stream="ORDERS_DEMO_$run"   # this run's own stream and subjects
subjects="demo.$run.orders"

if [ -z "${DATABASE_URL:-}" ]; then
	scripts/services.sh pg
	DATABASE_URL="$(scripts/services.sh url)"
fi
export DATABASE_URL

tmp="$(mktemp -d)"
pids=()
nats_pid=""
cleanup() {
	set +e
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null
	done
	if [ -x bin/orders-consumer ] && [ -n "${NATS_URL:-}" ]; then
		bin/orders-consumer --nats-url "$NATS_URL" --stream "$stream" --delete-stream >/dev/null 2>&1
	fi
	if [ -n "$nats_pid" ]; then
		kill -TERM "$nats_pid" 2>/dev/null
		wait "$nats_pid" 2>/dev/null
	fi
	# No idle slot left behind (it would keep WAL), and no record of it either:
	# the relay would take the next run's new slot for a lost one.
	psql "$DATABASE_URL" -qAtX -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$slot' AND NOT active" \
		-c "DELETE FROM $schema.relay_state WHERE slot = '$slot' AND NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = '$slot')" >/dev/null 2>&1
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

if [ -z "${NATS_URL:-}" ]; then
	if port_open 127.0.0.1 4222; then
		NATS_URL=nats://127.0.0.1:4222
	elif command -v nats-server >/dev/null 2>&1; then
		port=$((20000 + RANDOM % 20000))
		echo "== starting a private nats-server with JetStream on 127.0.0.1:$port"
		nats-server -a 127.0.0.1 -p "$port" -js -sd "$tmp/nats" >"$tmp/nats.log" 2>&1 &
		nats_pid=$!
		for _ in $(seq 1 50); do port_open 127.0.0.1 "$port" && break; sleep 0.1; done
		NATS_URL="nats://127.0.0.1:$port"
	else
		echo "demo-orders: NATS is not running on 127.0.0.1:4222 and nats-server is not installed" >&2
		echo "  install it (Debian: apt-get install nats-server) or set NATS_URL" >&2
		exit 1
	fi
fi
export NATS_URL

echo "== building outbox, the orders service and its consumer"
go build -o bin/outbox ./cmd/outbox
go build -o bin/orders ./examples/orders
go build -o bin/orders-consumer ./examples/orders-consumer

# a fresh start for the consumer's tables (the stream is new)
psql "$DATABASE_URL" -qc "DROP SCHEMA IF EXISTS $consumer_schema CASCADE" 2>/dev/null

started="$(psql "$DATABASE_URL" -qAtX -c "SELECT now()")" # this run's events are the ones created after
echo "== outbox migrate up --schema $schema            (the service's outbox)"
bin/outbox migrate up --schema "$schema" --publication "$publication"
echo "== outbox migrate inbox up --schema $consumer_schema (the consumer's inbox)"
bin/outbox migrate inbox up --schema "$consumer_schema"

cat >"$tmp/relay.yaml" <<YAML
database:
  url: \${DATABASE_URL}
  schema: $schema
  slot: $slot
  publication: $publication
admin:
  listen: "off"
log:
  format: text
sinks:
  - name: bus
    type: nats
    url: \${NATS_URL}
    stream: $stream
routes:
  - name: orders
    match: "order.*"
    sink: bus
    destination: "$subjects.{{.EventType}}"
default_route:
  drop: true
YAML

echo "== outbox relay: $schema.events -> NATS stream $stream (subjects $subjects.order.*)"
bin/outbox relay --config "$tmp/relay.yaml" --log-level warn > >(sed -u 's/^/   relay: /') 2>&1 &
relay_pid=$!
pids+=("$relay_pid")

bin/orders --listen 127.0.0.1:0 --addr-file "$tmp/addr" --schema "$schema" --app-schema "$app_schema" 2>"$tmp/orders.log" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$tmp/addr" ] && break; sleep 0.1; done
[ -s "$tmp/addr" ] || { cat "$tmp/orders.log" >&2; echo "demo-orders: the orders service did not start" >&2; exit 1; }
api="http://$(cat "$tmp/addr")"
echo "== orders service on $api"

pretty() { if command -v jq >/dev/null 2>&1; then jq -c .; else cat; echo; fi; }
call() { # METHOD PATH [BODY]
	echo "-> $1 $2 ${3:-}"
	printf '   '
	curl -sS -X "$1" -H 'Content-Type: application/json' ${3:+--data "$3"} "$api$2" | pretty
}
id_of() { sed -n 's/.*"id":"\([^"]*\)".*/\1/p'; }

echo "== placing, paying and cancelling orders"
a="$(curl -sS -X POST --data '{"customer":"alice","items":[{"sku":"book","quantity":2,"price_cents":1250}]}' "$api/orders" | id_of)"
echo "-> POST /orders  alice: 2 x book at \$12.50   => $a"
b="$(curl -sS -X POST --data '{"customer":"bob","items":[{"sku":"lamp","quantity":1,"price_cents":4900}]}' "$api/orders" | id_of)"
echo "-> POST /orders  bob:   1 x lamp at \$49.00   => $b"
c="$(curl -sS -X POST --data '{"customer":"alice","items":[{"sku":"pen","quantity":3,"price_cents":199}]}' "$api/orders" | id_of)"
echo "-> POST /orders  alice: 3 x pen at \$1.99     => $c"
call POST "/orders/$a/pay"
call POST "/orders/$b/cancel" '{"reason":"found it cheaper"}'
call POST "/orders/$b/pay"                   # 409: a cancelled order cannot be paid; no event
call POST /orders '{"customer":"","items":[]}' # 400: nothing written
echo "== GET /orders/$a: the order rebuilt from its events (sdk/history)"
call GET "/orders/$a"

echo "== outbox events --aggregate order:$a"
bin/outbox events --schema "$schema" --aggregate "order:$a"

sleep 1 # let the relay deliver
if ! kill -0 "$relay_pid" 2>/dev/null; then
	echo "demo-orders: the relay stopped (see its output above)" >&2
	exit 1
fi
echo "== orders-consumer: applies each event once, then reads the stream again"
bin/orders-consumer --stream "$stream" --subject "$subjects.>" --schema "$consumer_schema" --idle 1500ms --replay

echo "== stopping the service and the relay (SIGTERM: the relay finishes in-flight events, confirms its position)"
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()
mine="FROM $schema.events WHERE created_at >= '$started'"
written="$(psql "$DATABASE_URL" -qAtX -c "SELECT count(*) $mine")"
delivered="$(psql "$DATABASE_URL" -qAtX -c "SELECT count(*) $mine AND delivered_at IS NOT NULL")"
echo "== done: this run wrote $written events: $delivered delivered, $((written - delivered)) undelivered"
