# The two commands: `make run` starts the product, `make test` runs every test.
# Both create .venv and install pinned dependencies on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: run test lint bench install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever the pins change.
$(INSTALLED): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt '.[dev]'
	touch $@

install: $(INSTALLED)

run: $(INSTALLED)
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput -v 0
	$(BIN)/python manage.py seed_demo
	$(BIN)/python -m portal.devserver

# PORTAL_VAR_DIR keeps the test run's broker folders apart from a running `make run`.
test: $(INSTALLED)
	PORTAL_VAR_DIR=$(CURDIR)/var/test $(BIN)/python -m pytest $(PYTEST_ARGS)

# Speed and memory of the chat path, measured on this machine (never asserted in tests):
# prints a table and writes var/bench/chat.json. Load goes to 127.0.0.1 only; PostgreSQL
# (BENCH_PG_OWNER_URL) and Redis (BENCH_REDIS_URL, DB 12) are used if reachable, each
# measurement in a database and Redis DB of its own. BENCH_ARGS="--quick" for a smoke run.
bench: $(INSTALLED)
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)
	# Knowledge bases: recall@5 / MRR on the Python reference topics, query latency over
	# 100,000 chunks in 100 tenants, ingestion of a 50 MB batch (SQLite and PostgreSQL).
	$(BIN)/python -m tests.bench.knowledge $(BENCH_ARGS)
	# Usage dashboards with 10M events and the operator table with 1,000 tenants (SQLite and
	# PostgreSQL); merges dashboard_ms_p50 / operator_table_ms_p50 into var/bench/billing.json.
	$(BIN)/python -m tests.bench.billing $(BENCH_ARGS)
	# Noisy neighbour: tenant B's p95 with tenant A at 10x its rate limit; merges
	# noisy_neighbour_p95_ratio into var/bench/billing.json.
	$(BIN)/python -m tests.bench.noisy $(BENCH_ARGS)
	# Guardrails: precision/recall per entity and injection TPR/FPR on a labelled set of 400+
	# texts, and check_ms_p50/p99 (2,000 chars, every entity, 1,000 terms) → var/bench/guardrails.json.
	$(BIN)/python -m tests.bench.guardrails

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var
