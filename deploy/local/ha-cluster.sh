#!/usr/bin/env bash
# A local high-availability setup for trying the fleet on a cluster
# (docs/operations.md "Running on a cluster"):
#   - three RabbitMQ nodes ha1@localhost, ha2@localhost, ha3@localhost joined
#     into one cluster (AMQP 127.0.0.1:5701-5703, distribution 25701-25703);
#   - a Redis master (6391) with one replica (6392), append-only, and three
#     sentinels (26391-26393) watching them as "mymaster".
# Everything lives under $HA_CLUSTER_DIR (default /tmp/contexten-ha); nothing
# touches the machine's own RabbitMQ (5672, node rabbit@<host>) or Redis (6379).
# The machine's epmd is shared, as every Erlang node on a host does.
#
#   deploy/local/ha-cluster.sh start    start and join everything, print the settings
#   deploy/local/ha-cluster.sh status   cluster members, quorum queue leaders, Redis master
#   deploy/local/ha-cluster.sh stop     stop everything it started and remove the directory
#
# The test `make ha` starts the same shapes on free ports of its own
# (contexten-testkit's RabbitCluster and RedisSentinelGroup).
set -euo pipefail

DIR=${HA_CLUSTER_DIR:-${TMPDIR:-/tmp}/contexten-ha}
RABBIT=/usr/lib/rabbitmq/bin
AMQP_PORTS=(5701 5702 5703)
DIST_PORTS=(25701 25702 25703)
REDIS_PORTS=(6391 6392)
SENTINEL_PORTS=(26391 26392 26393)
MASTER=${REDIS_SENTINEL_MASTER:-mymaster}

node() { echo "ha$1@localhost"; }

# Every rabbitmq command runs with none of the machine's RabbitMQ or Erlang
# settings: our HOME (the shared cookie) and an empty env file.
rabbit_env() {
	env -i PATH="$PATH" LANG=C.UTF-8 HOME="$DIR/home" \
		RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf" ERL_CRASH_DUMP_BYTES=0 "$@"
}

ctl() {
	local i=$1
	shift
	rabbit_env timeout 120 "$RABBIT/rabbitmqctl" -n "$(node "$i")" "$@"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_rabbit() {
	local i=$1 n=$(($1 - 1))
	local d="$DIR/rabbit$i"
	mkdir -p "$d/mnesia" "$d/log"
	cat >"$d/rabbitmq.conf" <<-EOF
		listeners.tcp.default = 127.0.0.1:${AMQP_PORTS[$n]}
		loopback_users.guest = true
		disk_free_limit.absolute = 50MB
		log.console = false
		log.file.level = info
		cluster_partition_handling = pause_minority
	EOF
	echo "[]." >"$d/enabled_plugins"
	rabbit_env RABBITMQ_NODENAME="$(node "$i")" RABBITMQ_DIST_PORT="${DIST_PORTS[$n]}" \
		RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" \
		RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
		RABBITMQ_PID_FILE="$d/pid" ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}" \
		setsid nohup "$RABBIT/rabbitmq-server" >"$d/server.log" 2>&1 </dev/null &
}

start_redis() {
	local d="$DIR/redis$1" port=$2
	shift 2
	mkdir -p "$d"
	redis-server --bind 127.0.0.1 --port "$port" --dir "$d" --logfile "$d/redis.log" \
		--pidfile "$d/pid" --daemonize yes --appendonly yes --appendfsync everysec \
		--save "" "$@"
}

start_sentinel() {
	local d="$DIR/sentinel$1" port=$2
	mkdir -p "$d"
	cat >"$d/sentinel.conf" <<-EOF
		bind 127.0.0.1
		port $port
		dir $d
		logfile $d/sentinel.log
		pidfile $d/pid
		daemonize yes
		sentinel monitor $MASTER 127.0.0.1 ${REDIS_PORTS[0]} 2
		sentinel down-after-milliseconds $MASTER 2000
		sentinel failover-timeout $MASTER 10000
		sentinel parallel-syncs $MASTER 1
	EOF
	redis-server "$d/sentinel.conf" --sentinel
}

cmd_start() {
	if [[ -e "$DIR" ]]; then
		echo "$DIR exists: already started? ($0 stop first)" >&2
		exit 1
	fi
	for port in "${AMQP_PORTS[@]}" "${DIST_PORTS[@]}" "${REDIS_PORTS[@]}" "${SENTINEL_PORTS[@]}"; do
		if port_busy "$port"; then
			echo "port $port is in use; not starting" >&2
			exit 1
		fi
	done
	mkdir -p "$DIR/home"
	: >"$DIR/rabbitmq-env.conf"
	# One cookie for the three nodes (and rabbitmqctl), readable only by us.
	head -c 24 /dev/urandom | base64 | tr -dc 'A-Z0-9a-z' | tr a-z A-Z >"$DIR/home/.erlang.cookie"
	chmod 400 "$DIR/home/.erlang.cookie"

	for i in 1 2 3; do start_rabbit "$i"; done
	for i in 1 2 3; do
		rabbit_env timeout 180 "$RABBIT/rabbitmqctl" -n "$(node "$i")" wait "$DIR/rabbit$i/pid" --timeout 170 >/dev/null
	done
	for i in 2 3; do
		ctl "$i" stop_app >/dev/null
		ctl "$i" join_cluster "$(node 1)" >/dev/null
		ctl "$i" start_app >/dev/null
	done
	echo "RabbitMQ cluster: $(node 1), $(node 2), $(node 3)"

	start_redis 1 "${REDIS_PORTS[0]}"
	start_redis 2 "${REDIS_PORTS[1]}" --replicaof 127.0.0.1 "${REDIS_PORTS[0]}"
	for i in 1 2 3; do start_sentinel "$i" "${SENTINEL_PORTS[$((i - 1))]}"; done
	echo "Redis: master 127.0.0.1:${REDIS_PORTS[0]}, replica 127.0.0.1:${REDIS_PORTS[1]}, sentinels ${SENTINEL_PORTS[*]}"
	cat <<-EOF

		Settings for the fleet (README "Settings"):
		  AMQP_URL=amqp://guest:guest@127.0.0.1:${AMQP_PORTS[0]}/%2f
		  AMQP_ADDRESSES=127.0.0.1:${AMQP_PORTS[0]},127.0.0.1:${AMQP_PORTS[1]},127.0.0.1:${AMQP_PORTS[2]}
		  QUEUE_TYPE=quorum
		  REDIS_URL=redis://127.0.0.1:${REDIS_PORTS[0]}
		  REDIS_SENTINELS=127.0.0.1:${SENTINEL_PORTS[0]},127.0.0.1:${SENTINEL_PORTS[1]},127.0.0.1:${SENTINEL_PORTS[2]}
		  REDIS_SENTINEL_MASTER=$MASTER
	EOF
}

cmd_status() {
	if [[ ! -d "$DIR" ]]; then
		echo "not started ($DIR does not exist)"
		exit 1
	fi
	for i in 1 2 3; do
		if ctl "$i" eval 'rabbit_nodes:all_running().' 2>/dev/null; then
			break
		fi
	done
	for i in 1 2 3; do
		if ctl "$i" list_queues -q name type leader 2>/dev/null; then
			break
		fi
	done
	for port in "${SENTINEL_PORTS[@]}"; do
		if redis-cli -p "$port" sentinel get-master-addr-by-name "$MASTER" 2>/dev/null | paste -sd: -; then
			break
		fi
	done
}

# Stops what this script started: each pid file's process, after a clean
# shutdown where one is possible; never anything by name.
cmd_stop() {
	if [[ ! -d "$DIR" ]]; then
		echo "not started ($DIR does not exist)"
		return 0
	fi
	for i in 1 2 3; do
		ctl "$i" stop >/dev/null 2>&1 || true
	done
	local pidfile pid
	for pidfile in "$DIR"/rabbit*/pid "$DIR"/redis*/pid "$DIR"/sentinel*/pid; do
		[[ -f "$pidfile" ]] || continue
		pid=$(cat "$pidfile")
		if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
			kill -9 "$pid" 2>/dev/null || true
		fi
	done
	rm -rf "$DIR"
	echo "stopped; $DIR removed"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
	echo "usage: $0 start|stop|status" >&2
	exit 2
	;;
esac
