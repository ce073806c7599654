"""Django settings. Every value comes from the environment (see README), with dev defaults."""

import warnings
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from leadflow.env import EnvError, env_bool, env_float, env_int, env_str
from leadflow.logs import logging_config
from leadflow.outbound_guard import OutboundPolicy, OutboundRefused, allowed_hosts_parse, url_check

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_str("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",")

# ---------------------------------------------------------------------------
# Security (README "Security"): secrets, cookies, proxies, the operator listener, API keys.
# ---------------------------------------------------------------------------
# A developer's machine: `make run` sets it, and so does running with the embedded PostgreSQL
# (DATABASE_URL unset: `manage.py` in another terminal). Everything else is production.
DEV = env_bool("LEADFLOW_DEV", not env_str("DATABASE_URL"))
DEV_SECRET_KEY = "dev-only-not-secret"
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or (DEV_SECRET_KEY if DEV or DEBUG else "")
# Outside dev, a missing or placeholder key (deploy/k8s/secret.yaml's replace-me) stops every
# process at start: sessions, CSRF tokens and password resets are signed with it.
if not (DEV or DEBUG) and (len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set to at least 50 random characters outside dev "
        "(it is " + ("unset" if not SECRET_KEY else f"{len(SECRET_KEY)} characters") + "): "
        "python -c 'import secrets; print(secrets.token_urlsafe(50))'. LEADFLOW_DEV=true "
        "allows a dev-only key (never in production)."
    )
# Cookies of the admin (the operator listener) travel over HTTPS only, except in dev; browsers
# allow them on http://127.0.0.1 and localhost, where `kubectl port-forward` puts the listener.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", not DEV)
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0 if DEV else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [
    # TLS ends at the load balancer or ingress, which redirects http to https; Django's own
    # redirect would also answer the kubelet's, Prometheus's and KEDA's plain-HTTP calls 301.
    "security.W008",
]
if not SECURE_HSTS_INCLUDE_SUBDOMAINS:
    # Whether HSTS covers the domain's other hosts, and is preloaded into browsers, is the
    # domain owner's decision (the two settings above), not this application's.
    SILENCED_SYSTEM_CHECKS.append("security.W005")
if not SECURE_HSTS_PRELOAD:
    SILENCED_SYSTEM_CHECKS.append("security.W021")

# How many proxies you run in front of the API, each appending the address it saw to
# X-Forwarded-For: the client's address is the nth entry from the right (apps/intake/
# authentication.py `client_ip`); entries further left are the client's own words. 0: the
# TCP peer. Too high, and clients choose their address; too low, and every client shares the
# proxy's, per-IP limits included.
TRUSTED_PROXIES = env_int("LEADFLOW_TRUSTED_PROXIES", 0)
if TRUSTED_PROXIES < 0:
    raise EnvError(f"LEADFLOW_TRUSTED_PROXIES must be 0 or more, got {TRUSTED_PROXIES}")
if env_bool("LEADFLOW_TRUST_X_FORWARDED_FOR", False):
    raise EnvError(
        "LEADFLOW_TRUST_X_FORWARDED_FOR (which trusted the leftmost, client-written "
        "X-Forwarded-For entry) is replaced by LEADFLOW_TRUSTED_PROXIES=<number of proxies>"
    )
if TRUSTED_PROXIES:
    # Behind a proxy that terminates TLS and sets the header (and replaces a client's own).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# The API's operator listener (gunicorn binds it next to the public port; apps/health/
# operator.py): /metrics, /scaling/backlog, /readyz with details, and /admin. The public port
# serves none of them.
OPERATOR_PORT = env_int("LEADFLOW_OPERATOR_PORT", 8001)

# API keys (apps/tenants/keys.py): when a key was last used is written to PostgreSQL at most
# this often (apps/tenants/usage.py), never by the request itself.
API_KEY_LAST_USED_WRITE_SECONDS = env_float("LEADFLOW_API_KEY_LAST_USED_WRITE_SECONDS", 60.0)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc as static files: the docs need no CDN
    "django_prometheus",
    "apps.intake",  # no models: its templates (the API docs' Redoc page without web fonts)
    "apps.tenants",
    "apps.leads",
    "apps.enrichment",
    "apps.crm",
    "apps.control",
    "apps.reports",
    "apps.retention",  # retention and erasure of personal data, and their audit
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "leadflow.logs.RequestLogContextMiddleware",
    # The public listener reaches only the public URLs (before anything resolves one).
    "apps.health.operator.ListenerUrlconfMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # admin static files under gunicorn
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "leadflow.urls"
WSGI_APPLICATION = "leadflow.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Unset DATABASE_URL means the embedded PostgreSQL that `make run` / `make test` start
# (leadflow/devstack.py): pgserver, listening only on a unix socket in var/pg. Spelled out
# rather than parsed from a URL so that any checkout path works as the socket directory.
_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 60)
if env_str("DATABASE_URL"):
    DATABASES = {
        "default": dj_database_url.parse(
            env_str("DATABASE_URL"), conn_max_age=_CONN_MAX_AGE, conn_health_checks=True
        )
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": str(BASE_DIR / "var" / "pg"),
            "NAME": "leadflow",
            "USER": "postgres",
            "CONN_MAX_AGE": _CONN_MAX_AGE,
            "CONN_HEALTH_CHECKS": True,
        }
    }
# A server that does not answer a connection attempt costs at most this long (libpq's
# connect_timeout; its minimum is 2 s), never a request held until gunicorn's timeout.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "connect_timeout", env_int("DATABASE_CONNECT_TIMEOUT", 3)
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Unset REDIS_URL means the embedded redis-server that devstack starts (port overridable).
REDIS_URL = env_str(
    "REDIS_URL", f"redis://127.0.0.1:{env_int('LEADFLOW_EMBEDDED_REDIS_PORT', 6390)}/0"
)
# How long a Redis call may take (leadflow/redis_conn.py): every process's client, and the
# API's, which answers 503 rather than keep a client waiting (README "Outages").
REDIS_CONNECT_TIMEOUT_SECONDS = env_float("LEADFLOW_REDIS_CONNECT_TIMEOUT_SECONDS", 2.0)
REDIS_TIMEOUT_SECONDS = env_float("LEADFLOW_REDIS_TIMEOUT_SECONDS", 10.0)
API_REDIS_CONNECT_TIMEOUT_SECONDS = env_float("LEADFLOW_API_REDIS_CONNECT_TIMEOUT_SECONDS", 0.1)
API_REDIS_TIMEOUT_SECONDS = env_float("LEADFLOW_API_REDIS_TIMEOUT_SECONDS", 0.5)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"

# Intake limits. A lead's payload is capped so one tenant cannot fill Redis with blobs.
LEAD_PAYLOAD_MAX_BYTES = env_int("LEADFLOW_PAYLOAD_MAX_BYTES", 16 * 1024)
BATCH_MAX_LEADS = 500
# Whole request bodies: one lead with a full payload; a batch of 500 typical leads with room
# for payloads (a batch of 500 maximal payloads must be split).
LEAD_BODY_MAX_BYTES = env_int("LEADFLOW_LEAD_BODY_MAX_BYTES", 64 * 1024)
BATCH_BODY_MAX_BYTES = env_int("LEADFLOW_BATCH_BODY_MAX_BYTES", 4 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = BATCH_BODY_MAX_BYTES
DEDUP_TTL_SECONDS = env_int("LEADFLOW_DEDUP_TTL_SECONDS", 24 * 3600)
# Retention (apps/retention, README "Retention"): the job runs every INTERVAL in the control
# process, anonymizing at most BATCH leads per transaction (short locks, SKIP LOCKED) ...
RETENTION_INTERVAL_SECONDS = env_float("LEADFLOW_RETENTION_INTERVAL_SECONDS", 300.0)
RETENTION_BATCH_SIZE = env_int("LEADFLOW_RETENTION_BATCH_SIZE", 500)
# ... for at most this long a run, so the control's database thread (policy, audit) is not held.
RETENTION_RUN_MAX_SECONDS = env_float("LEADFLOW_RETENTION_RUN_MAX_SECONDS", 2.0)
# How long a tenant/API key stays in a process's cache without an invalidation message.
TENANT_CACHE_TTL_SECONDS = env_float("LEADFLOW_TENANT_CACHE_TTL_SECONDS", 30.0)
# While PostgreSQL is unreachable, a key loaded this recently is still served (README "Outages").
TENANT_CACHE_STALE_SECONDS = env_float("LEADFLOW_TENANT_CACHE_STALE_SECONDS", 3600.0)

# Dispatcher: leads move from inboxes to pool A in batches, and only while the
# pools' queues are shallow, so a critical lead never waits behind a deep queue.
DISPATCH_BATCH_MAX = env_int("LEADFLOW_DISPATCH_BATCH_MAX", 500)
DISPATCH_WATERMARK_A = env_int("LEADFLOW_DISPATCH_WATERMARK_A", 4)  # messages in a.*
DISPATCH_WATERMARK_BC = env_int("LEADFLOW_DISPATCH_WATERMARK_BC", 16)  # messages in b.* or c.*
# How often, at most, a tier sends a batch that is not full (apps/control/dispatcher.py says
# why): at a few hundred leads a second, a few batches of a hundred leads, not hundreds of one.
DISPATCH_LINGER_SECONDS = {
    "critical": env_float("LEADFLOW_DISPATCH_LINGER_CRITICAL", 0.25),
    "normal": env_float("LEADFLOW_DISPATCH_LINGER_NORMAL", 0.5),
    "low": env_float("LEADFLOW_DISPATCH_LINGER_LOW", 1.0),
}
# A batch handed to pool A and not stored within this long is published again (at-least-once:
# storing is idempotent). Above the task time limit, so a slow batch is not doubled needlessly.
INFLIGHT_REPUBLISH_SECONDS = env_float("LEADFLOW_INFLIGHT_REPUBLISH_SECONDS", 360.0)
# A stored lead still waiting for enrichment or CRM sync after this long is sent on again.
# Above the CRM's whole retry schedule, so a lead between retries is not doubled needlessly.
STALLED_LEAD_SECONDS = env_float("LEADFLOW_STALLED_LEAD_SECONDS", 900.0)
# A stored lead waiting this long for B or C that no message carries (none waiting in B's or
# C's queues, none held by a worker) lost its message (apps/control/sweeper.py): sent on again
# at the next sweep, without waiting for STALLED_LEAD_SECONDS.
ORPHAN_LEAD_SECONDS = env_float("LEADFLOW_ORPHAN_LEAD_SECONDS", 30.0)
# Drain rate assumed before the controller has measured one (leads/s per tier).
DRAIN_RATE_DEFAULT = env_float("LEADFLOW_DRAIN_RATE_DEFAULT", 1000.0)

# ---------------------------------------------------------------------------
# Overload control: admission limits, backpressure, the controller's modes, shedding.
# Defaults are ARCHITECTURE.md's; every one can be set small for tests.
# ---------------------------------------------------------------------------
# Requests without a valid API key, per IP address (a token bucket): bots guessing keys.
ANONYMOUS_IP_RATE = env_float("LEADFLOW_ANONYMOUS_IP_RATE", 100.0)
ANONYMOUS_IP_BURST = env_int("LEADFLOW_ANONYMOUS_IP_BURST", 200)
# Behind proxies, the address these limits use: LEADFLOW_TRUSTED_PROXIES (above).
# Backpressure: a tier refuses leads (429) while the backlog ahead of a new lead (its tier and
# the tiers before it) is at this bound, or while its lag is over the lag bound. Critical's
# bounds are the widest, so critical intake is refused last.
BACKPRESSURE_BACKLOG = {
    "critical": env_int("LEADFLOW_BACKPRESSURE_BACKLOG_CRITICAL", 400_000),
    "normal": env_int("LEADFLOW_BACKPRESSURE_BACKLOG_NORMAL", 200_000),
    "low": env_int("LEADFLOW_BACKPRESSURE_BACKLOG_LOW", 100_000),
}
BACKPRESSURE_LAG_SECONDS = {
    "critical": env_float("LEADFLOW_BACKPRESSURE_LAG_CRITICAL", 120.0),
    "normal": env_float("LEADFLOW_BACKPRESSURE_LAG_NORMAL", 600.0),
    "low": env_float("LEADFLOW_BACKPRESSURE_LAG_LOW", 1800.0),
}
# Retry-After under backpressure is backlog ÷ drain rate, clamped to at most this.
RETRY_AFTER_MAX_SECONDS = env_int("LEADFLOW_RETRY_AFTER_MAX_SECONDS", 300)
# The mode machine (apps/control/modes.py). Lags in seconds; a transition happens only after
# its condition has held for MODE_DWELL_SECONDS, so the mode cannot flap around a threshold.
MODE_THIN_ENTER_LAG = env_float("LEADFLOW_MODE_THIN_ENTER_LAG", 30.0)  # normal tier
MODE_THIN_EXIT_LAG = env_float("LEADFLOW_MODE_THIN_EXIT_LAG", 10.0)
MODE_SEVERE_ENTER_LAG = env_float("LEADFLOW_MODE_SEVERE_ENTER_LAG", 300.0)  # normal tier
MODE_SEVERE_EXIT_LAG = env_float("LEADFLOW_MODE_SEVERE_EXIT_LAG", 120.0)
MODE_EMERGENCY_ENTER_LAG = env_float("LEADFLOW_MODE_EMERGENCY_ENTER_LAG", 60.0)  # critical
MODE_EMERGENCY_EXIT_LAG = env_float("LEADFLOW_MODE_EMERGENCY_EXIT_LAG", 20.0)
MODE_DWELL_SECONDS = env_float("LEADFLOW_MODE_DWELL_SECONDS", 10.0)
# SEVERE: the share of non-critical leads that still go on past qualification (admin can
# change it on the policy page); the rest wait in the deferred ledger.
SEVERE_SAMPLING_PERCENT = env_int("LEADFLOW_SEVERE_SAMPLING_PERCENT", 25)
# CRM sync pace per tenant (leads/s), and the pace while "CRM sync throttled" is shed.
CRM_RATE_PER_SECOND = env_float("LEADFLOW_CRM_RATE_PER_SECOND", 500.0)
CRM_THROTTLED_RATE_PER_SECOND = env_float("LEADFLOW_CRM_THROTTLED_RATE_PER_SECOND", 50.0)
# Reports and analytics are built per tenant for each period once it has ended (pool C, LOW).
REPORT_PERIOD_SECONDS = env_int("LEADFLOW_REPORT_PERIOD_SECONDS", 3600)
# Deferred work is backfilled in NORMAL mode, this many ledger rows per pass at most; a row
# sent and not done within BACKFILL_RETRY_SECONDS is sent again.
BACKFILL_BATCH = env_int("LEADFLOW_BACKFILL_BATCH", 500)
BACKFILL_RETRY_SECONDS = env_float("LEADFLOW_BACKFILL_RETRY_SECONDS", 900.0)

SCORING_CONFIG_PATH = Path(
    env_str("LEADFLOW_SCORING_CONFIG", str(BASE_DIR / "config" / "scoring.yaml"))
)

# Pool B: AI enrichment. With no URL the local provider is used.
AI_PROVIDER_URL = env_str("LEADFLOW_AI_URL", "")
AI_PROVIDER_MODEL = env_str("LEADFLOW_AI_MODEL", "gpt-4o-mini")
AI_PROVIDER_API_KEY = env_str("LEADFLOW_AI_API_KEY", "")
# One call's total deadline (connect + send + receive; leadflow/outbound.py) and reply cap.
AI_PROVIDER_TIMEOUT_SECONDS = env_float("LEADFLOW_AI_TIMEOUT_SECONDS", 2.0)
AI_RESPONSE_MAX_BYTES = env_int("LEADFLOW_AI_RESPONSE_MAX_BYTES", 1024 * 1024)

# The SSRF guard on every outbound call (leadflow/outbound_guard.py): https only unless
# ALLOW_HTTP (dev: `make run` and the tests' live stack set it; DEBUG implies it), and never an
# internal address unless the URL's host is named in ALLOWED_HOSTS (an internal CRM, a local AI).
OUTBOUND_ALLOW_HTTP = env_bool("LEADFLOW_OUTBOUND_ALLOW_HTTP", DEBUG)
OUTBOUND_ALLOWED_HOSTS = allowed_hosts_parse(env_str("LEADFLOW_OUTBOUND_ALLOWED_HOSTS", ""))
if AI_PROVIDER_URL:  # refused at start too, not only at its first call
    try:
        url_check(
            AI_PROVIDER_URL,
            OutboundPolicy(OUTBOUND_ALLOW_HTTP, frozenset(OUTBOUND_ALLOWED_HOSTS)),
            resolve="numeric",
        )
    except OutboundRefused as _refused:
        raise ImproperlyConfigured(f"LEADFLOW_AI_URL {AI_PROVIDER_URL!r}: {_refused}") from None
# Pools B and C run threads, where Celery enforces no time limit (celery/celery#9203): a task
# bounds its own work by this deadline (calls start only while one fits) and re-enqueues what
# is left, so no thread is held longer by a slow provider or CRM.
AI_TASK_DEADLINE_SECONDS = env_float("LEADFLOW_POOL_B_TASK_DEADLINE_SECONDS", 60.0)

# Circuit breakers (shared by every process through Redis).
BREAKER_FAIL_MAX = env_int("LEADFLOW_BREAKER_FAIL_MAX", 5)
BREAKER_RESET_SECONDS = env_float("LEADFLOW_BREAKER_RESET_SECONDS", 30.0)

# Pool C: CRM sync. A tenant without a webhook URL is synced by the local adapter.
# One delivery's total deadline (connect + send + receive) and how much of a reply is read.
CRM_TIMEOUT_SECONDS = env_float("LEADFLOW_CRM_TIMEOUT_SECONDS", 10.0)
CRM_RESPONSE_MAX_BYTES = env_int("LEADFLOW_CRM_RESPONSE_MAX_BYTES", 64 * 1024)
# A tenant's transient failure (5xx, 408, 429, timeout, breaker open) retries that tenant's
# leads after base x 2^(n-1) s (n = 1, 2, ...; capped), +/- the jitter share; the last one
# dead-letters them.
CRM_MAX_RETRIES = env_int("LEADFLOW_CRM_MAX_RETRIES", 3)
CRM_RETRY_BASE_SECONDS = env_float("LEADFLOW_CRM_RETRY_BASE_SECONDS", 1.0)
CRM_RETRY_JITTER = env_float("LEADFLOW_CRM_RETRY_JITTER", 0.2)
CRM_RETRY_BACKOFF_MAX_SECONDS = env_int("LEADFLOW_CRM_RETRY_BACKOFF_MAX_SECONDS", 60)
# A group the CRM refuses with 400/413/422 is split in halves to find the leads it refuses, at
# most this many more calls per group; past that the refused parts are dead-lettered whole.
CRM_REFUSAL_SPLIT_CALLS = env_int("LEADFLOW_CRM_REFUSAL_SPLIT_CALLS", 32)
CRM_TASK_DEADLINE_SECONDS = env_float("LEADFLOW_POOL_C_TASK_DEADLINE_SECONDS", 60.0)
# Pools B and C: a task that met PostgreSQL or Redis down runs again after 1, 2, 4 ... s, at
# most this long apart, for as long as it takes (never quarantined or dead-lettered for it).
DEPENDENCY_RETRY_MAX_SECONDS = env_int("LEADFLOW_DEPENDENCY_RETRY_MAX_SECONDS", 30)
# A task starts a call only while one (and its recording, ~2 s) fits before its deadline: a
# deadline under that would send its work round the queue without ever doing any.
for _deadline, _call, _deadline_name, _call_name in (
    (AI_TASK_DEADLINE_SECONDS, AI_PROVIDER_TIMEOUT_SECONDS, "POOL_B_TASK_DEADLINE", "AI_TIMEOUT"),
    (CRM_TASK_DEADLINE_SECONDS, CRM_TIMEOUT_SECONDS, "POOL_C_TASK_DEADLINE", "CRM_TIMEOUT"),
):
    if _deadline < 2 * _call + 2:
        raise ImproperlyConfigured(
            f"LEADFLOW_{_deadline_name}_SECONDS ({_deadline:g}) must be at least twice "
            f"LEADFLOW_{_call_name}_SECONDS ({_call:g}) + 2"
        )

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.intake.authentication.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["apps.intake.authentication.IsTenant"],
    "EXCEPTION_HANDLER": "apps.intake.errors.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}

# The public API's OpenAPI schema (apps/intake/schema.py): /api/schema/, /api/docs/, /api/redoc/.
SPECTACULAR_SETTINGS = {
    "TITLE": "LeadFlow intake API",
    "DESCRIPTION": (
        "Send leads, and read each one's status. Every error is JSON "
        '`{"error": code, "detail": text, "fields"?: {field: [reasons]}}`. '
        'The README\'s "The API" and "Lead fields" say the rules in prose.'
    ),
    "VERSION": "1",
    "OAS_VERSION": "3.0.3",
    # Public: the schema and the docs need no API key.
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "PREPROCESSING_HOOKS": ["apps.intake.schema.public_paths_only"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.intake.schema.schema_finish",
    ],
    "ENUM_NAME_OVERRIDES": {
        "Tier": "workers.queues.TIERS",
        "Limit": "apps.intake.contract.LIMITS",
        "QueuedStatus": ["queued"],
        "RateLimitedError": ["rate_limited"],
        "InvalidError": ["invalid"],
        "StoredStatus": "apps.intake.contract_status.STORED_STATUSES",
    },
}

# ---------------------------------------------------------------------------
# Celery. Only what matters is set, each with its reason.
# ---------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
# Results are written to PostgreSQL by the tasks themselves; nobody reads task results.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Ack after the task ran, so a worker that dies mid-batch leaves the message to be redelivered.
CELERY_TASK_ACKS_LATE = True
# A pool child killed by SIGKILL/OOM: put the message back instead of acking it as failed.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message at a time per process: prefetch would pull low-tier batches ahead of critical ones.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Time limits bound a stuck batch; the soft limit lets the task stop cleanly first.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
# Recycle prefork children to bound slow leaks.
CELERY_WORKER_MAX_TASKS_PER_CHILD = env_int("CELERY_WORKER_MAX_TASKS_PER_CHILD", 10_000)
# Celery's Django fixup closes every database connection before and after every task unless
# this is set: a new PostgreSQL connection for every batch cost pool A a fifth of its time.
# Set, a connection is kept for up to twice this many tasks, and leadflow/celery.py closes a
# broken one, or one older than CONN_MAX_AGE, around each task (Django's close_old_connections).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
CELERY_WORKER_SEND_TASK_EVENTS = True  # for Flower
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# An error Redis answers (OOM when full) makes a worker reconnect, as a lost connection does,
# instead of exiting; redis:// itself is kombu's transport made to ride out a Redis killed or
# full (leadflow/broker.py).
CELERY_BROKER_CHANNEL_ERROR_RETRY = True
# How often each worker renews the leases of the messages it holds (workers/lease.py).
LEASE_RENEW_SECONDS = env_float("LEADFLOW_LEASE_RENEW_SECONDS", 5.0)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Workers list their queues critical, normal, low; "priority" makes BRPOP try them
    # in that order every time, so a waiting critical batch is always taken first.
    "queue_order_strategy": "priority",
    # An unacked message is handed out again once it has not been renewed for this long.
    # Workers renew the messages they hold every LEASE_RENEW_SECONDS (workers/lease.py), so a
    # batch however long is never doubled while it runs, and a killed worker's batch comes
    # back within this plus the restore interval. Keep it at least 3 x LEASE_RENEW_SECONDS.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 25),
    # How soon a message of a dead worker comes back once its visibility timeout passed:
    # kombu's default sweeps only every 10 s x 10 calls (~100 s); one cheap ZRANGE every 5 s
    # per worker brings a killed batch back within seconds of its timeout.
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
    # Restores run under a Redis mutex that expires after 300 s by default: a worker killed
    # while holding it (a restore takes milliseconds) would stop every restore for 5 minutes,
    # killed workers' batches included. 15 s bounds that.
    "unacked_mutex_expire": 15,
}

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
