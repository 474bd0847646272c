# Run `make help` for the targets.
SHELL := /bin/bash
GO    ?= go
# The relay, CLI and tests (root module) and the SDK (sdk/go.mod), joined by go.work.
PKGS  ?= ./... ./sdk/...

.PHONY: help demo test test-short vet fmt build services-up services-down bench chaos torture fuzz clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

demo: ## quick start: throwaway PostgreSQL, migrations, relay, sample transactions (ends by itself)
	@scripts/demo.sh

demo-orders: ## example orders service -> relay -> NATS -> consumer with the inbox (ends by itself)
	@scripts/demo-orders.sh

build: ## build bin/outbox
	$(GO) build -o bin/outbox ./cmd/outbox

test: services-up ## every test (-race) against real PostgreSQL, NATS, RabbitMQ, Redis; Kafka in-process
	@set -a; eval "$$(scripts/services.sh env)"; set +a; \
	OUTBOX_TEST_REQUIRE_SERVICES=1 $(GO) test -race -count=1 -timeout 30m $(PKGS) && \
	echo "sdk module alone, at the minimum versions its go.mod requires (GOWORK=off):" && \
	cd sdk && GOWORK=off OUTBOX_TEST_REQUIRE_SERVICES=1 $(GO) test -race -count=1 -timeout 10m ./...

test-short: services-up ## the tests without -race, faster
	@set -a; eval "$$(scripts/services.sh env)"; set +a; \
	OUTBOX_TEST_REQUIRE_SERVICES=1 $(GO) test -count=1 -timeout 30m $(PKGS)

fuzz: ## run each fuzz target briefly (FUZZTIME, default 10s each)
	@for pt in relay:FuzzParseConfig relay:FuzzDestination internal/pgoutput:FuzzDecodeInsert internal/pgoutput:FuzzDecodeHeaders internal/pgoutput:FuzzDecoder \
		dlq:FuzzGlobRegexp sdk/wire:FuzzNATSEncoding cmd/outbox/outboxcli:FuzzParseDuration; do \
		p=$${pt%%:*}; t=$${pt#*:}; echo "fuzz $$p $$t"; \
		for try in 1 2; do \
			out=$$($(GO) test ./$$p -run '^$$' -fuzz "^$$t$$" -fuzztime $${FUZZTIME:-10s} 2>&1) && { echo "$$out" | tail -n 2; break; }; \
			echo "$$out"; \
			if [ $$try = 1 ] && ! echo "$$out" | grep -q 'Failing input written' && echo "$$out" | grep -q 'context deadline exceeded'; then \
				echo "fuzz: go's fuzzer missed its own deadline shutting its workers down (a toolchain flake, no failing input); once more"; \
				continue; \
			fi; \
			exit 1; \
		done; \
	done

chaos: services-up ## the chaos test for longer (CHAOS_SECONDS, default 300)
	@set -a; eval "$$(scripts/services.sh env)"; set +a; \
	OUTBOX_CHAOS_SECONDS=$${CHAOS_SECONDS:-300} OUTBOX_TEST_REQUIRE_SERVICES=1 $(GO) test -count=1 -timeout 60m -run 'TestChaos' -v ./e2e

torture: services-up ## the generative torture test for longer (TORTURE_SECONDS, default 300; TORTURE_SEED, TORTURE_SKIP)
	@set -a; eval "$$(scripts/services.sh env)"; set +a; \
	TORTURE_SECONDS=$${TORTURE_SECONDS:-300} OUTBOX_TEST_REQUIRE_SERVICES=1 $(GO) test -count=1 -timeout 90m -run '^TestTorture$$' -v ./e2e

vet: ## gofmt and go vet
	@out="$$(gofmt -l $$(git ls-files '*.go') 2>/dev/null)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	cd sdk && GOWORK=off $(GO) vet ./...

fmt: ## format the code
	gofmt -w $$(git ls-files '*.go')

bench: services-up ## measure SDK and relay (own throwaway PostgreSQL, fsync on) against every sink; one table (BENCH_FLAGS=--help for options)
	$(GO) build -o bin/outbox-bench ./cmd/outbox-bench
	@set -a; eval "$$(scripts/services.sh env)"; set +a; \
	bin/outbox-bench $(BENCH_FLAGS)

services-up: ## start (or find) the throwaway PostgreSQL and the brokers
	@scripts/services.sh up

services-down: ## stop the throwaway PostgreSQL
	@scripts/services.sh down

clean: ## remove build output (keeps the throwaway cluster)
	rm -rf bin
