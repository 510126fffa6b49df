#!/usr/bin/env bash
# Runs the whole fleet locally with readable logs; Ctrl-C stops everything.
# Expects the binaries in target/debug (make up builds them first).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${CONTEXTEN_BIN_DIR:-target/debug}
export LOG_FORMAT=${LOG_FORMAT:-pretty}
export RUST_LOG=${RUST_LOG:-info}
export CONTEXTEN_ALLOW_LOCAL_REPOS=${CONTEXTEN_ALLOW_LOCAL_REPOS:-1}

# name  health address (the defaults of DESIGN §11)
services=(
  "ingest ${INGEST_ADDR:-127.0.0.1:8080}"
  "context-worker 127.0.0.1:9101"
  "generator-worker 127.0.0.1:9102"
  "agent-worker 127.0.0.1:9103"
  "dispatcher 127.0.0.1:9104"
)

pids=()
stop() {
  trap - INT TERM EXIT
  echo "run-fleet: stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop INT TERM EXIT

for entry in "${services[@]}"; do
  read -r name addr <<<"$entry"
  # Process substitution keeps $! on the binary itself, so SIGTERM reaches it.
  if [ "$name" = ingest ]; then
    INGEST_ADDR=$addr "$bin/$name" > >(sed -u "s/^/[$name] /") 2>&1 &
  else
    HEALTH_ADDR=$addr "$bin/$name" > >(sed -u "s/^/[$name] /") 2>&1 &
  fi
  pids+=("$!")
done

ready() { curl -fsS "http://$1/readyz" >/dev/null 2>&1; }
for entry in "${services[@]}"; do
  read -r name addr <<<"$entry"
  for _ in $(seq 1 120); do ready "$addr" && break; sleep 0.25; done
  if ready "$addr"; then echo "run-fleet: $name ready on http://$addr/readyz"; else echo "run-fleet: $name NOT ready on $addr" >&2; exit 1; fi
done
echo "run-fleet: the fleet is up (Ctrl-C stops it)"
if [ -n "${RUN_FLEET_DEMO:-}" ]; then eval "$RUN_FLEET_DEMO"; fi
if [ -n "${RUN_FLEET_EXIT_AFTER_READY:-}" ]; then exit 0; fi
wait
