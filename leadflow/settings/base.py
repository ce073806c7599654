"""The project's base settings: security, apps, middleware, PostgreSQL, Redis, the API's
framework and schema. leadflow/settings/__init__.py adds the other parts."""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from leadflow.env import EnvError, env_bool, env_float, env_int, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent  # the checkout: leadflow/settings/..

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
    "leadflow",  # the project core: no models, its system checks (leadflow/checks.py)
    "apps.intake",  # no models: its templates (the API docs' Redoc page without web fonts)
    "apps.tenants",
    "apps.leads",
    "apps.enrichment",
    "apps.crm",
    "apps.control",
    "apps.reports",
    "apps.retention",  # retention and erasure of personal data, and their audit
    "apps.usage",  # the overload receipt: per tenant and hour (README "Receipt")
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
# A node of the Redis Cluster that holds the inboxes and the admission state (empty: they are
# on REDIS_URL); everything else stays on REDIS_URL (leadflow/redis_conn.py). The tenants' keys
# spread over LEADFLOW_REDIS_SHARDS hash tags (leadflow/redis_keys.py): set it to a few times
# the cluster's masters, on every process alike.
REDIS_CLUSTER_URL = env_str("LEADFLOW_REDIS_CLUSTER_URL", "")
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
        "Tier": "leadflow.queues.TIERS",
        "Limit": "apps.intake.contract.LIMITS",
        "QueuedStatus": ["queued"],
        "RateLimitedError": ["rate_limited"],
        "InvalidError": ["invalid"],
        "AlwaysTrue": [(True, True)],  # TrueField: `duplicate`, `replayed` (only when true)
        "StoredStatus": "apps.intake.contract_status.STORED_STATUSES",
    },
}
