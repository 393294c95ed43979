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

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) var
