"""What the probes check: each dependency reached with a short timeout, never hanging a worker.

A fresh connection each time, on purpose: a readiness probe must tell whether a new
connection can be made now, not whether an old pooled one still looks alive.
"""

from dataclasses import dataclass

import psycopg
import redis
from django.conf import settings
from django.db import connections


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str  # "ok", or the error's type and message


def _failed(name: str, error: Exception) -> CheckResult:
    # The first line only: probes and their logs want the reason, not a traceback.
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return CheckResult(name, False, f"{type(error).__name__}: {message}"[:300])


def redis_check(name: str, url: str, timeout: float) -> CheckResult:
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
    except redis.RedisError as error:
        return _failed(name, error)
    finally:
        client.close()
    return CheckResult(name, True, "ok")


def postgres_check(timeout: float) -> CheckResult:
    """Connect and SELECT 1 with Django's own connection parameters (so PgBouncer too).

    connect_timeout bounds an unreachable server (libpq rounds it up to 2 s); a server that
    accepts and then stalls is bounded by the probe's own timeout and gunicorn's --timeout.
    """
    params = connections["default"].get_connection_params()
    try:
        with psycopg.connect(**params, connect_timeout=max(int(timeout), 1)) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as error:
        return _failed("postgres", error)
    return CheckResult("postgres", True, "ok")


def readiness_checks() -> list[CheckResult]:
    """Redis (inboxes), the Celery broker when it is another server, and PostgreSQL."""
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    results = [redis_check("redis", settings.REDIS_URL, timeout)]
    if settings.CELERY_BROKER_URL != settings.REDIS_URL:
        results.append(redis_check("broker", settings.CELERY_BROKER_URL, timeout))
    results.append(postgres_check(timeout))
    return results
