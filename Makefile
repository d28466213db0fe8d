# replaywatch: `make test` and `make demo` are the two commands a fresh machine needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RW := $(BIN)/replaywatch
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Helm, for the chart's tests: built once with `go install` and cached, like Kafka's jars.
HELM_VERSION := 3.19.0
HELM := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/replaywatch/tools/helm-$(HELM_VERSION)/helm
export REPLAYWATCH_HELM := $(HELM)

.PHONY: help deps venv lint typecheck test test-unit test-integration test-faults demo bench bench-compare bench-backfill \
        stack-up stack-down clean helm

help:
	@echo "make test      lint, type-check, and run every test on a real local stack"
	@echo "make demo      the whole pipeline end to end on the local stack"
	@echo "make bench     the end-to-end benchmark; make bench-compare: the engine alone"
	@echo "make stack-up / stack-down   the local stack (Kafka, PostgreSQL, S3)"

# System packages: Java 17+ and Maven (for Kafka's jars and the registry), PostgreSQL, Chromium and
# ChromeDriver (the browser tests of `replaywatch serve`). Installed with
# apt-get only when missing.
deps:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	{ command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml native/Cargo.toml native/src/lib.rs
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,devstack,semantic]'
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Starts the stack unless REPLAYWATCH_KAFKA_BOOTSTRAP is given, runs the tests, prints
# the services' logs when they fail, stops what it started, and exits with pytest's status.
define with_stack
	@set +e; started=""; \
	if [ -z "$$REPLAYWATCH_KAFKA_BOOTSTRAP" ]; then \
	  $(RW) devstack down --purge >/dev/null 2>&1; \
	  $(RW) devstack up || { $(RW) devstack down --purge; exit 1; }; \
	  eval "$$($(RW) devstack env)"; started=1; \
	fi; \
	$(1); rc=$$?; \
	if [ $$rc -ne 0 ] && [ -n "$$started" ]; then \
	  echo "--- the services' logs, for the failures above ---"; \
	  $(RW) devstack logs registry --lines 60 --match 'response_code="[45]|WARN|ERROR'; \
	  $(RW) devstack logs --lines 30; \
	fi; \
	if [ -n "$$started" ]; then $(RW) devstack down --purge; fi; \
	exit $$rc
endef

$(HELM):
	@command -v go >/dev/null || { echo "Go is needed to build helm (go install helm.sh/helm/v3/cmd/helm)"; exit 1; }
	GOBIN=$(dir $(HELM)) go install helm.sh/helm/v3/cmd/helm@v$(HELM_VERSION)

helm: $(HELM)

test: deps $(STAMP) $(HELM) lint typecheck
	$(call with_stack,$(BIN)/pytest tests -m "not slow_faults" $(PYTEST_ARGS))

# The long fault and fuzz suite: 50,000 events, 20+ SIGKILLs, Kafka and PostgreSQL
# restarts, S3 stopped for 20 s, 10,000 fuzzed records. Reports in /tmp/replaywatch-*-report.md.
test-faults: deps $(STAMP)
	$(call with_stack,$(BIN)/pytest tests/faults -m slow_faults -s --timeout=3600 $(PYTEST_ARGS))

test-unit: $(STAMP) $(HELM)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: deps $(STAMP)
	$(call with_stack,$(BIN)/pytest tests/integration $(PYTEST_ARGS))

demo: deps $(STAMP)
	bash scripts/demo.sh

stack-up: deps $(STAMP)
	$(RW) devstack up
	@$(RW) devstack env

stack-down: $(STAMP)
	$(RW) devstack down

# End to end, with the Quix Streams peer, then telemetry off and on: results in
# bench/results/ (not committed).
bench: deps $(STAMP)
	$(BIN)/pip install -q -e '.[test,devstack,semantic,bench]'
	$(call with_stack,$(BIN)/python bench/e2e.py $(BENCH_ARGS) && $(BIN)/python bench/levers.py && $(BIN)/python bench/telemetry_cost.py && $(BIN)/python bench/registry_decode.py)

bench-compare: $(STAMP)
	$(BIN)/python bench/compare_bench.py --policies --against 124457f --rounds 5
	$(BIN)/python bench/signal_quality.py --timing 10

# Backfill, dry run, re-scoring and rebuild over 200,000 events, beside the live rate.
bench-backfill: deps $(STAMP)
	$(call with_stack,$(BIN)/python bench/backfill.py $(BENCH_ARGS))

clean:
	-$(RW) devstack down --purge
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
