#!/usr/bin/env bash
# services.sh: find or start the services the tests and the demo need.
#
#   scripts/services.sh up     start (or reuse) a throwaway PostgreSQL cluster with
#                              wal_level=logical and check NATS, RabbitMQ and Redis
#   scripts/services.sh env    print the OUTBOX_TEST_* variables for the tests
#   scripts/services.sh url    print the throwaway cluster's DATABASE_URL
#   scripts/services.sh down   stop the throwaway cluster
#
# DATABASE_URL or OUTBOX_TEST_DATABASE_URL, when set, is used as it is and no cluster
# is started. The cluster lives in .services/pg (git-ignored; OUTBOX_SERVICES_DIR
# moves .services elsewhere), listens on 127.0.0.1 and OUTBOX_PG_PORT (default the
# first free port from 54329), and trusts local connections: it is for tests and
# demos only.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
svc_dir="${OUTBOX_SERVICES_DIR:-$root/.services}"
pg_dir="$svc_dir/pg"
# The cluster's port: OUTBOX_PG_PORT, else the one recorded when the cluster
# was made, else the first free one from 54329 (another checkout's cluster may
# hold 54329).
pick_port() {
	if [ -n "${OUTBOX_PG_PORT:-}" ]; then
		echo "$OUTBOX_PG_PORT"
	elif [ -f "$svc_dir/pg.port" ]; then
		cat "$svc_dir/pg.port"
	elif [ -f "$svc_dir/pg/postgresql.conf" ] && grep -q '^port = ' "$svc_dir/pg/postgresql.conf"; then
		grep '^port = ' "$svc_dir/pg/postgresql.conf" | tail -n1 | awk '{print $3}'
	else
		free_port 54329
	fi
}

# free_port FROM: the first port from FROM on where nothing listens.
free_port() {
	local p
	for p in $(seq "$1" 54399); do
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	echo "$1"
}
pg_port="$(pick_port)"
pg_db="outbox"

log() { echo "services: $*" >&2; }

pg_bindir() {
	if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
		pg_config --bindir
		return
	fi
	local d
	d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)"
	if [ -n "$d" ] && [ -x "$d/initdb" ]; then
		echo "$d"
		return
	fi
	if command -v initdb >/dev/null 2>&1; then
		dirname "$(command -v initdb)"
		return
	fi
	log "no PostgreSQL server found (initdb missing)."
	log "install it (Debian: apt-get install postgresql) or set DATABASE_URL to a"
	log "PostgreSQL with wal_level=logical (compose.yaml starts one with Docker)."
	exit 1
}

# as_pg runs a command as the postgres OS user when we are root (initdb refuses root).
as_pg() {
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

pg_url() {
	echo "postgres://postgres@127.0.0.1:${pg_port}/${pg_db}?sslmode=disable"
}

pg_up() {
	if [ -n "${OUTBOX_TEST_DATABASE_URL:-${DATABASE_URL:-}}" ]; then
		return
	fi
	local bin
	bin="$(pg_bindir)"
	mkdir -p "$svc_dir"
	if [ ! -f "$pg_dir/PG_VERSION" ]; then
		log "creating a throwaway PostgreSQL cluster in $pg_dir (port $pg_port)"
		rm -rf "$pg_dir" "$svc_dir/pg.port"
		mkdir -p "$pg_dir"
		if [ "$(id -u)" = 0 ]; then
			chown postgres: "$pg_dir"
			chmod 700 "$pg_dir"
			# every parent must be traversable by the postgres user
			local p="$pg_dir"
			while [ "$p" != "/" ]; do
				p="$(dirname "$p")"
				chmod o+x "$p" 2>/dev/null || true
			done
		fi
		as_pg "$bin/initdb" -D "$pg_dir" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$svc_dir/initdb.log" 2>&1 ||
			{ cat "$svc_dir/initdb.log" >&2; exit 1; }
		echo "$pg_port" >"$svc_dir/pg.port"
		cat >>"$pg_dir/postgresql.conf" <<CONF
# added by scripts/services.sh: a throwaway cluster for tests and demos
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$pg_dir'
wal_level = logical
max_replication_slots = 64
max_wal_senders = 64
max_connections = 300
shared_buffers = 256MB
fsync = ${OUTBOX_PG_FSYNC:-off}
synchronous_commit = ${OUTBOX_PG_SYNCHRONOUS_COMMIT:-on}
full_page_writes = ${OUTBOX_PG_FSYNC:-off}
wal_sender_timeout = 60s
max_slot_wal_keep_size = 4GB
log_min_messages = warning
CONF
	fi
	if as_pg "$bin/pg_ctl" -D "$pg_dir" status >/dev/null 2>&1; then
		return
	fi
	log "starting PostgreSQL on 127.0.0.1:$pg_port"
	local tries=0 seen=0
	# the log does not exist before the cluster's first start
	if [ -f "$pg_dir/server.log" ]; then
		seen="$(wc -l <"$pg_dir/server.log")"
	fi
	until as_pg "$bin/pg_ctl" -D "$pg_dir" -l "$pg_dir/server.log" -w -t 60 start >/dev/null; do
		tries=$((tries + 1))
		# The port was free when picked, but 54329 and up lie in Linux's
		# ephemeral range: a client socket can take it before PostgreSQL
		# binds. Move on to the next free port, unless OUTBOX_PG_PORT set it.
		if [ -z "${OUTBOX_PG_PORT:-}" ] && [ "$tries" -lt 5 ] &&
			tail -n +"$((seen + 1))" "$pg_dir/server.log" | grep -q "Address already in use"; then
			pg_port="$(free_port "$((pg_port + 1))")"
			sed -i "s/^port = .*/port = $pg_port/" "$pg_dir/postgresql.conf"
			echo "$pg_port" >"$svc_dir/pg.port"
			seen="$(wc -l <"$pg_dir/server.log")"
			log "that port was taken meanwhile; starting PostgreSQL on 127.0.0.1:$pg_port"
			continue
		fi
		tail -n 30 "$pg_dir/server.log" >&2
		exit 1
	done
	if ! "$bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -tAc \
		"SELECT 1 FROM pg_database WHERE datname = '$pg_db'" | grep -q 1; then
		"$bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -qc "CREATE DATABASE $pg_db" >/dev/null
	fi
}

pg_down() {
	[ -f "$pg_dir/PG_VERSION" ] || return 0
	local bin
	bin="$(pg_bindir)"
	if as_pg "$bin/pg_ctl" -D "$pg_dir" status >/dev/null 2>&1; then
		log "stopping PostgreSQL on 127.0.0.1:$pg_port"
		as_pg "$bin/pg_ctl" -D "$pg_dir" -m fast -w stop >/dev/null
	fi
}

# port_open HOST PORT: true when something accepts TCP connections there.
port_open() {
	(exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

wait_port() {
	local i
	for i in $(seq 1 60); do
		port_open "$1" "$2" && return 0
		sleep 0.5
	done
	return 1
}

# brokers_up finds NATS, RabbitMQ and Redis on their usual ports and starts the
# installed servers when they are not running. URLs given in OUTBOX_TEST_* win.
# When one is neither running nor installed (or does not start), it says which
# and how to get it, and fails: the tests need all three.
brokers_up() {
	local missing=() pkgs=()
	# need NAME ENV PORT PACKAGE: true when NAME must be started here. When ENV
	# is set, its server must answer; else something on 127.0.0.1:PORT, else
	# PACKAGE must be installed. What is missing is added to $missing.
	need() {
		if [ -n "${!2:-}" ]; then
			local hp="${!2#*://}"
			hp="${hp##*@}"
			hp="${hp%%[/?,]*}"
			case "$hp" in *:*) ;; *) hp="$hp:$3" ;; esac
			port_open "${hp%:*}" "${hp##*:}" || missing+=("$1: nothing answers at $hp ($2)")
			return 1
		fi
		port_open 127.0.0.1 "$3" && return 1
		if ! command -v "$4" >/dev/null 2>&1; then
			missing+=("$1: nothing answers on 127.0.0.1:$3 and $4 is not installed")
			pkgs+=("$4")
			return 1
		fi
	}
	if need NATS OUTBOX_TEST_NATS_URL 4222 nats-server; then
		log "starting nats-server with JetStream on 127.0.0.1:4222"
		mkdir -p "$svc_dir/nats"
		nohup nats-server -a 127.0.0.1 -p 4222 -js -sd "$svc_dir/nats" >"$svc_dir/nats.log" 2>&1 &
		wait_port 127.0.0.1 4222 || missing+=("NATS: nats-server did not start (see $svc_dir/nats.log)")
	fi
	if need Redis OUTBOX_TEST_REDIS_URL 6379 redis-server; then
		log "starting redis-server on 127.0.0.1:6379"
		redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
			--dir /tmp --logfile "$svc_dir/redis.log" >/dev/null
		wait_port 127.0.0.1 6379 || missing+=("Redis: redis-server did not start (see $svc_dir/redis.log)")
	fi
	if need RabbitMQ OUTBOX_TEST_AMQP_URL 5672 rabbitmq-server; then
		log "starting rabbitmq-server on 127.0.0.1:5672"
		rabbitmq-server -detached >/dev/null 2>&1 || true
		wait_port 127.0.0.1 5672 || missing+=("RabbitMQ: rabbitmq-server did not start (see /var/log/rabbitmq/)")
	fi
	[ "${#missing[@]}" = 0 ] && return 0
	log "the tests need NATS (JetStream), RabbitMQ and Redis; missing:"
	local m
	for m in "${missing[@]}"; do
		log "  - $m"
	done
	if [ "${#pkgs[@]}" -gt 0 ]; then
		log "install: apt-get install ${pkgs[*]}   (Debian, Ubuntu)"
	fi
	log "or start them with Docker: docker compose up -d nats rabbitmq redis   (compose.yaml)"
	log "or point the tests at running ones: OUTBOX_TEST_NATS_URL, OUTBOX_TEST_AMQP_URL, OUTBOX_TEST_REDIS_URL"
	exit 1
}

print_env() {
	echo "OUTBOX_TEST_DATABASE_URL=${OUTBOX_TEST_DATABASE_URL:-${DATABASE_URL:-$(pg_url)}}"
	echo "OUTBOX_TEST_NATS_URL=${OUTBOX_TEST_NATS_URL:-nats://127.0.0.1:4222}"
	echo "OUTBOX_TEST_AMQP_URL=${OUTBOX_TEST_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}"
	echo "OUTBOX_TEST_REDIS_URL=${OUTBOX_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"
}

case "${1:-}" in
up) pg_up; brokers_up ;;
pg) pg_up ;;
env) print_env ;;
url)
	if [ -z "${DATABASE_URL:-}" ] && [ ! -f "$pg_dir/PG_VERSION" ]; then
		log "there is no throwaway cluster in $pg_dir yet: make demo (or scripts/services.sh pg) creates it"
		exit 1
	fi
	echo "${DATABASE_URL:-$(pg_url)}"
	;;
down) pg_down ;;
*) echo "usage: $0 up|pg|env|url|down" >&2; exit 2 ;;
esac
