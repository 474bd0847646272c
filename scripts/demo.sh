#!/usr/bin/env bash
# demo.sh: the quick start (`make demo`). Starts (or reuses) the throwaway
# PostgreSQL, migrates a "demo" outbox, runs the relay with the stdout sink
# (examples/demo/relay.yaml), writes sample business transactions through the
# SDK and shows their events arriving. It stops by itself, leaves only the
# throwaway cluster running (`make services-down` stops it) and prints its
# URL. DATABASE_URL, when set, is used instead.
#
# Every run looks the same: it counts the events of this run, and at the end
# it drops its replication slot (an idle slot keeps WAL) and the relay's
# record of it, so the next run starts afresh instead of reporting a lost slot.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

slot=demo_relay
throwaway=""
if [ -z "${DATABASE_URL:-}" ]; then
	scripts/services.sh pg
	DATABASE_URL="$(scripts/services.sh url)"
	throwaway=1
fi
export DATABASE_URL

echo "== building outbox"
go build -o bin/outbox ./cmd/outbox
go build -o bin/demo ./examples/demo

echo "== outbox migrate up --schema demo"
bin/outbox migrate up --schema demo --publication demo_events

sql() { psql "$DATABASE_URL" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }

out="$(mktemp)"
relay_pid=""
tail_pid=""
cleanup() {
	set +e
	if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
		kill -TERM "$relay_pid" 2>/dev/null
		wait "$relay_pid" 2>/dev/null
	fi
	[ -n "$tail_pid" ] && wait "$tail_pid" 2>/dev/null
	# No idle slot left behind (it would keep WAL), and no record of it either:
	# the relay would take the next run's new slot for a lost one. A slot in
	# use (a relay of yours on examples/demo/relay.yaml) is left alone.
	sql "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$slot' AND NOT active;
		DELETE FROM demo.relay_state WHERE slot = '$slot' AND NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = '$slot')" >/dev/null ||
		echo "demo: could not drop the replication slot $slot (see above); the next run reports it lost and recreates it" >&2
	rm -f "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== outbox relay --config examples/demo/relay.yaml (stdout sink): events appear below as JSON lines"
bin/outbox relay --config examples/demo/relay.yaml --log-level warn >"$out" &
relay_pid=$!
tail -s 0.1 -n +1 -f "$out" --pid "$relay_pid" &
tail_pid=$!

# relay_alive fails, saying so, when the relay has exited.
relay_alive() {
	kill -0 "$relay_pid" 2>/dev/null && return 0
	wait "$relay_pid" || true
	relay_pid=""
	echo "demo: the relay stopped (its error is above)" >&2
	return 1
}

# Wait until the relay streams from its slot.
for _ in $(seq 1 300); do
	relay_alive || exit 1
	[ "$(sql "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '$slot' AND active")" = 1 ] && break
	sleep 0.1
done

run="$(date +%H%M%S)-$((RANDOM % 90 + 10))" # this run's orders are ord-$run-1 ... ord-$run-5
mine="FROM demo.events WHERE aggregate_id LIKE 'ord-$run-%'"
echo "== writing sample business transactions through the SDK (examples/demo)"
bin/demo --schema demo --orders 5 --every 300ms --run "$run"

# Wait until the relay has delivered every event of this run.
for i in $(seq 1 300); do
	relay_alive || exit 1
	[ "$(sql "SELECT count(*) $mine AND delivered_at IS NULL")" = 0 ] && break
	if [ "$i" = 300 ]; then
		echo "demo: the relay has not delivered this run's events after 30 s; is another relay on slot $slot? (bin/outbox status --schema demo --slot $slot)" >&2
	fi
	sleep 0.1
done

echo "== stopping the relay (SIGTERM: finishes in-flight events, confirms its position)"
kill -TERM "$relay_pid"
wait "$relay_pid" || true
relay_pid=""
wait "$tail_pid" || true
tail_pid=""

written="$(sql "SELECT count(*) $mine")"
delivered="$(sql "SELECT count(*) $mine AND delivered_at IS NOT NULL")"
echo "== done: this run wrote $written events: $delivered delivered, $((written - delivered)) undelivered"
echo "   (order ord-$run-3 was rolled back: its events never reached the outbox)"
echo
if [ -n "$throwaway" ]; then
	echo "The throwaway PostgreSQL stays up (make services-down stops it; scripts/services.sh url prints its URL):"
	echo "  export DATABASE_URL='$DATABASE_URL'"
else
	echo "Your database (DATABASE_URL) now holds the demo's outbox in schema demo."
fi
echo "  psql \"\$DATABASE_URL\" -c 'SELECT event_type, aggregate_id, delivered_at FROM demo.events ORDER BY created_at'"
echo "  bin/outbox relay --config examples/demo/relay.yaml   # then, in another shell: go run ./examples/quickstart"
