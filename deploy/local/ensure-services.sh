#!/usr/bin/env bash
# Makes RabbitMQ and Redis available for the fleet and its tests:
# use the running ones; otherwise start installed ones; otherwise install them
# from the system's packages (apt-get on Debian/Ubuntu) and start them.
# Prints what it did. Honours AMQP_URL and REDIS_URL (host and port only).
set -euo pipefail

amqp_url=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}

host_port() { # url default_port -> "host port"
  local rest=${1#*://}; rest=${rest#*@}; rest=${rest%%/*}
  local host=${rest%%:*} port=${rest##*:}
  [ "$port" = "$rest" ] && port=$2
  echo "$host $port"
}

is_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_open() { # host port name seconds
  local i
  for ((i = 0; i < $4 * 4; i++)); do
    is_open "$1" "$2" && return 0
    sleep 0.25
  done
  echo "ensure-services: $3 did not open $1:$2 within $4 s" >&2
  return 1
}

is_local() { [ "$1" = 127.0.0.1 ] || [ "$1" = localhost ] || [ "$1" = ::1 ]; }

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  if ! command -v apt-get >/dev/null; then
    echo "ensure-services: $1 is not installed and there is no apt-get here; install it and re-run" >&2
    exit 1
  fi
  echo "ensure-services: installing $* from the system's packages"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_redis() {
  read -r host port < <(host_port "$redis_url" 6379)
  if is_open "$host" "$port"; then echo "ensure-services: Redis already running on $host:$port"; return; fi
  is_local "$host" || { echo "ensure-services: Redis at $host:$port is not reachable" >&2; exit 1; }
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /tmp/contexten-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir /tmp/contexten-redis --logfile /tmp/contexten-redis/redis.log
  wait_open "$host" "$port" Redis 20
  echo "ensure-services: started Redis on $host:$port"
}

ensure_rabbitmq() {
  read -r host port < <(host_port "$amqp_url" 5672)
  if is_open "$host" "$port"; then
    echo "ensure-services: RabbitMQ already running on $host:$port"
    # A broker we did not start is never reconfigured: only say how.
    if ! is_open "$host" 15692; then
      echo "ensure-services: its Prometheus plugin (:15692, the dashboard's queue panels and the queue" \
        "alerts, docs/operations.md \"5. Alerts\") is off; to enable it: sudo rabbitmq-plugins enable rabbitmq_prometheus"
    fi
    return
  fi
  is_local "$host" || { echo "ensure-services: RabbitMQ at $host:$port is not reachable" >&2; exit 1; }
  command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ] || apt_install rabbitmq-server
  PATH=$PATH:/usr/sbin
  # The broker we start serves its queue metrics (rabbitmq_prometheus on :15692,
  # docs/operations.md "5. Alerts"); --offline: the node is not running yet.
  rabbitmq-plugins enable --offline rabbitmq_prometheus >/dev/null 2>&1 \
    || echo "ensure-services: could not enable rabbitmq_prometheus (queue metrics stay off)" >&2
  # The Debian service may be stopped; start the broker directly (no systemd in containers).
  rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_open "$host" "$port" RabbitMQ 90
  rabbitmqctl await_startup >/dev/null 2>&1 || true
  echo "ensure-services: started RabbitMQ on $host:$port (Prometheus metrics on :15692)"
}

# contexten-testkit starts RabbitMQ nodes and Redis servers of a test's own (the
# fault and TLS tests), so the binaries must be here even where the services run.
ensure_test_tools() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
  command -v openssl >/dev/null || missing+=(openssl)
  # The console's browser test (tests/flows/console.rs) drives a headless Chromium.
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

ensure_redis
ensure_rabbitmq
ensure_test_tools
