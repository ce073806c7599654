"""Operations: health probes, static files, logs, shutdown, PgBouncer, metrics, worker
recycling, Redis checks and durability."""

import warnings

from leadflow.env import EnvError, env_bool, env_float, env_int, env_str
from leadflow.logs import logging_config
from leadflow.settings.base import API_REDIS_TIMEOUT_SECONDS, DATABASES

# ---------------------------------------------------------------------------
# Operations: health probes, static files, structured logs, shutdown, PgBouncer.
# ---------------------------------------------------------------------------
# /readyz gives each dependency this long (PostgreSQL's connect timeout is at least 2 s).
HEALTH_CHECK_TIMEOUT_SECONDS = env_float("LEADFLOW_HEALTH_TIMEOUT_SECONDS", 2.0)

# WhiteNoise serves the admin's static files from gunicorn with DEBUG off. Compressed but not
# hashed (no manifest): a template rendered before `collectstatic` still works, in tests too.
# Finders let `make run` serve them with no collectstatic; the image collects them anyway.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
# With finders on, a missing STATIC_ROOT (no collectstatic yet) is expected, not a problem.
warnings.filterwarnings("ignore", message="No directory at: ", category=UserWarning)

# JSON lines on stdout (console: the same fields, readable), with the request or task context
# and the trace_id / tenant bound where they are known (leadflow/logs.py).
LOGGING = logging_config(
    env_str("LEADFLOW_LOG_FORMAT", "json"), env_str("LEADFLOW_LOG_LEVEL", "INFO").upper()
)

# SIGTERM: with REMAP_SIGTERM=SIGQUIT in the environment (pool A's in docker-compose.yml and
# deploy/k8s; prefork only, as a thread pool cannot cancel a batch) a worker waits this long
# for its running batch, then cancels it and hands the message back to the queue at once;
# without, it waits for the batch however long it takes. Keep it under the orchestrator's
# grace period (compose stop_grace_period, k8s terminationGracePeriodSeconds).
CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT = env_float("CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT", 0.0)

# Behind PgBouncer in transaction mode a server-side cursor (QuerySet.iterator()) would outlive
# its transaction's server connection. Prepared statements are already off (Django's default).
if env_bool("DATABASE_PGBOUNCER", False):
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True

# ---------------------------------------------------------------------------
# Metrics (README "Metrics"): where each process serves Prometheus, and how many tenants get
# a label of their own. The API serves /metrics on its own port (django-prometheus).
# ---------------------------------------------------------------------------
# Loopback by default, so a dev machine exposes nothing; compose and k8s set 0.0.0.0.
METRICS_ADDRESS = env_str("LEADFLOW_METRICS_ADDRESS", "127.0.0.1")
# 0 turns a process's metrics server off.
CONTROL_METRICS_PORT = env_int("LEADFLOW_CONTROL_METRICS_PORT", 9100)
POOL_METRICS_PORTS = {
    "a": env_int("LEADFLOW_POOL_A_METRICS_PORT", 9101),
    "b": env_int("LEADFLOW_POOL_B_METRICS_PORT", 9102),
    "c": env_int("LEADFLOW_POOL_C_METRICS_PORT", 9103),
}
# Tenant labels: the N tenants with the most volume (leads accepted this hour + backlog) get
# their id as a label, every other tenant is "other", so a series count cannot grow with the
# number of tenants. The control process ranks them this often; every process reads the ranking
# as often, in a background thread (no Redis round trip is added to a request).
METRICS_TENANT_LABELS = env_int("LEADFLOW_METRICS_TENANT_LABELS", 20)
METRICS_TENANT_REFRESH_SECONDS = env_float("LEADFLOW_METRICS_TENANT_REFRESH_SECONDS", 10.0)

# ---------------------------------------------------------------------------
# Worker recycling, Redis checks and durability (README "Health, logs, shutdown", "Outages").
# ---------------------------------------------------------------------------
# Thread-pool workers (pools B and C) have no child processes to recycle: after this many tasks
# (plus up to 10 % at random) or above this much resident memory, a worker shuts down warm and
# its supervisor starts a new one (workers/recycle.py). 0 turns a limit off. The Procfile,
# compose and k8s set the memory limit per pool, under the pool's container limit.
WORKER_MAX_TASKS = env_int("LEADFLOW_WORKER_MAX_TASKS", 10_000)
WORKER_MAX_MEMORY_KB = env_int("LEADFLOW_WORKER_MAX_MEMORY_KB", 0)
# What a process does at start when a Redis server holding leads would lose them (appendonly
# off, maxmemory-policy not noeviction, appendfsync not LEADFLOW_REDIS_APPENDFSYNC): strict
# refuses to start, warn logs an error and starts, off checks nothing (leadflow/redis_checks.py).
# Every process checks again this often and exports leadflow_redis_durability_ok.
REDIS_CHECKS = env_str("LEADFLOW_REDIS_CHECKS", "strict").strip().lower()
if REDIS_CHECKS not in ("strict", "warn", "off"):
    raise EnvError(f"LEADFLOW_REDIS_CHECKS must be strict, warn or off, got {REDIS_CHECKS!r}")
REDIS_CHECK_INTERVAL_SECONDS = env_float("LEADFLOW_REDIS_CHECK_INTERVAL_SECONDS", 60.0)
# Durability of what Redis acknowledged (README "Outages"): everysec loses up to ~1 s of leads
# already answered 202 if the machine loses power; always fsyncs every write first (slower, see
# `make bench`). The embedded Redis runs with it (everysec when unset); set on another server,
# every process checks that server runs with it.
REDIS_APPENDFSYNC = env_str("LEADFLOW_REDIS_APPENDFSYNC", "").strip().lower()
if REDIS_APPENDFSYNC not in ("", "always", "everysec", "no"):
    raise EnvError(
        f"LEADFLOW_REDIS_APPENDFSYNC must be always, everysec or no, got {REDIS_APPENDFSYNC!r}"
    )
# With a Redis replica: the intake sends WAIT <replicas> <timeout> behind each admission, in the
# same round trip, so its 202 goes out once that many replicas have the leads (or the timeout
# passed: then counted and logged, and answered 202 all the same). 0 = off.
ADMIT_WAIT_REPLICAS = env_int("LEADFLOW_ADMIT_WAIT_REPLICAS", 0)
ADMIT_WAIT_TIMEOUT_MS = env_int("LEADFLOW_ADMIT_WAIT_TIMEOUT_MS", 50)
if ADMIT_WAIT_REPLICAS and not 0 < ADMIT_WAIT_TIMEOUT_MS < API_REDIS_TIMEOUT_SECONDS * 1000:
    raise EnvError(
        "LEADFLOW_ADMIT_WAIT_TIMEOUT_MS must be over 0 (WAIT 0 waits forever) and under the API's "
        "Redis timeout (LEADFLOW_API_REDIS_TIMEOUT_SECONDS), got "
        f"{ADMIT_WAIT_TIMEOUT_MS} ms"
    )

# ---------------------------------------------------------------------------
# Autoscaling (README "Forecasting"): what one replica of each pool is sized for, per tier, in
# the units of /scaling/backlog (pool A: leads waiting or in flight; B and C: queued messages),
# and the replica bounds. deploy/k8s gives KEDA the same figures (tests/deploy checks they
# agree); the controller publishes the replicas these imply as replicas.<pool>.
# ---------------------------------------------------------------------------
# The arrivals forecast's step (apps/control/forecast.py: its smoothing constants are per step).
FORECAST_STEP_SECONDS = env_float("LEADFLOW_FORECAST_STEP_SECONDS", 10.0)
AUTOSCALING = {
    "a": {"min_replicas": 1, "max_replicas": 20, "per_replica": {"critical": 500, "normal": 5000}},
    "b": {"min_replicas": 1, "max_replicas": 10, "per_replica": {"critical": 2, "normal": 2}},
    "c": {"min_replicas": 1, "max_replicas": 10, "per_replica": {"critical": 2, "normal": 2}},
}
