"""What the readiness probe checks: whether this process can serve the intake now.

Ready while Redis answers (admission and the inboxes live there). PostgreSQL down does not
make the API unready, since known keys are still accepted (apps/tenants/cache.py), unless no
key at all could be served; it is reported in the body. A separate Celery broker is reported
only: the API never publishes to it.

No probe opens a connection of its own: Redis is asked on the process's pooled client, with
the API's timeouts; PostgreSQL on the process's persistent connection, and not again for a
few seconds after it failed (so a probe storm never becomes connection attempts).
"""

from dataclasses import dataclass

import redis
from django.conf import settings

from apps.tenants.cache import database_probe, keys_servable_without_database
from leadflow.redis_conn import get_redis

READY, DEGRADED, UNAVAILABLE = "ready", "degraded", "unavailable"


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    ok: bool
    detail: str  # "ok", or the error's type and message


@dataclass(frozen=True, slots=True)
class Readiness:
    status: str  # READY | DEGRADED (serving, a dependency down) | UNAVAILABLE (cannot serve)
    checks: list[CheckResult]


def _failed(name: str, error: Exception) -> CheckResult:
    # The first line only: probes and their logs want the reason, not a traceback.
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return CheckResult(name, False, f"{type(error).__name__}: {message}"[:300])


def redis_check(name: str, client: redis.Redis) -> CheckResult:
    try:
        client.ping()
    except redis.RedisError as error:
        return _failed(name, error)
    return CheckResult(name, True, "ok")


_broker_clients: dict[str, redis.Redis] = {}


def _broker_client(url: str) -> redis.Redis:
    client = _broker_clients.get(url)
    if client is None:
        timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
        client = _broker_clients[url] = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout
        )
    return client


def postgres_check() -> CheckResult:
    state = database_probe()
    if state.reachable:
        return CheckResult("postgres", True, "ok")
    return CheckResult("postgres", False, state.error[:300])


def readiness() -> Readiness:
    """Redis, the Celery broker when it is another server, and PostgreSQL, as this process
    sees them, and whether it can serve."""
    checks = [redis_check("redis", get_redis())]
    if settings.CELERY_BROKER_URL != settings.REDIS_URL:
        checks.append(redis_check("broker", _broker_client(settings.CELERY_BROKER_URL)))
    postgres = postgres_check()
    checks.append(postgres)
    if not checks[0].ok:
        status = UNAVAILABLE
    elif postgres.ok:
        status = READY if all(check.ok for check in checks) else DEGRADED
    else:
        status = DEGRADED if keys_servable_without_database() else UNAVAILABLE
    return Readiness(status, checks)
