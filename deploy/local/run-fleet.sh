#!/usr/bin/env bash
# Runs the whole fleet locally with readable logs; Ctrl-C stops everything.
# Expects the binaries in target/debug (make up builds them first).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${CONTEXTEN_BIN_DIR:-target/debug}
export LOG_FORMAT=${LOG_FORMAT:-pretty}
export RUST_LOG=${RUST_LOG:-info}
export CONTEXTEN_ALLOW_LOCAL_REPOS=${CONTEXTEN_ALLOW_LOCAL_REPOS:-1}
# The demo answers about this repository to this machine: show the prompt too.
export GENERATOR_CONTEXT_ONLY_SOURCE=${GENERATOR_CONTEXT_ONLY_SOURCE:-1}

# The demo: a throwaway API token and callback secret, made fresh at each start,
# so a sample request can go through the fleet without any credentials.
demo_token=${DEMO_API_TOKEN:-demo-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export DEMO_CALLBACK_SECRET=${DEMO_CALLBACK_SECRET:-whsec_$(head -c 24 /dev/urandom | base64)}
export CALLBACK_SIGNING_SECRET=${CALLBACK_SIGNING_SECRET:-$DEMO_CALLBACK_SECRET}
# The operator console (README "The operator console") is on for the demo,
# with an admin token of its own for signing in.
export CONTEXTEN_CONSOLE=${CONTEXTEN_CONSOLE:-1}
console_token=${DEMO_CONSOLE_TOKEN:-console-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
if [ -z "${CONTEXTEN_API_TOKENS:-}" ] && [ -z "${CONTEXTEN_API_TOKENS_FILE:-}" ]; then
  export CONTEXTEN_API_TOKENS="demo:$(printf %s "$demo_token" | sha256sum | cut -d' ' -f1):submit+read,console:$(printf %s "$console_token" | sha256sum | cut -d' ' -f1):admin"
  demo_console_token=$console_token
fi
demo_port=${DEMO_RECEIVER_PORT:-8099}

# name  health address (the defaults of docs/design.md §11)
services=(
  "ingest ${INGEST_ADDR:-127.0.0.1:8080}"
  "context-worker 127.0.0.1:9101"
  "generator-worker 127.0.0.1:9102"
  "agent-worker 127.0.0.1:9103"
  "dispatcher 127.0.0.1:9104"
)

pids=()
DEMO_RECEIVER_PORT=$demo_port python3 deploy/local/demo-receiver.py &
pids+=("$!")
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
if [ "$CONTEXTEN_CONSOLE" = 1 ]; then
  echo "run-fleet: operator console: http://${INGEST_ADDR:-127.0.0.1:8080}/console"
  if [ -n "${demo_console_token:-}" ]; then
    echo "run-fleet: console login token (admin scope, this run only): $demo_console_token"
  else
    echo "run-fleet: console login: an admin-scope token of CONTEXTEN_API_TOKENS / CONTEXTEN_API_TOKENS_FILE"
  fi
fi

# A sample request against this repository; the answer arrives at the demo
# receiver (the context-only answer when no LLM_API_KEY is set).
if [ -z "${RUN_FLEET_NO_DEMO:-}" ]; then
  ingest=${INGEST_ADDR:-127.0.0.1:8080}
  echo "run-fleet: sending a sample request: \"where are dead letters given their reason header?\""
  curl -fsS -X POST "http://$ingest/v1/tasks" \
    -H "authorization: Bearer $demo_token" -H 'content-type: application/json' \
    -d "{\"text\": \"where are dead letters given their reason header? add a helper that counts them\", \"repository_url\": \"file://$PWD\", \"strategy\": \"context\", \"callback_url\": \"http://127.0.0.1:$demo_port/answer\"}" \
    && echo
  echo "run-fleet: try it yourself with: curl -H 'authorization: Bearer $demo_token' -H 'content-type: application/json' -d '{\"text\": \"...\", \"repository_url\": \"file://$PWD\", \"callback_url\": \"http://127.0.0.1:$demo_port/answer\"}' http://$ingest/v1/tasks"
fi
if [ -n "${RUN_FLEET_DEMO:-}" ]; then eval "$RUN_FLEET_DEMO"; fi
if [ -n "${RUN_FLEET_EXIT_AFTER_READY:-}" ]; then exit 0; fi
wait
