"""Circuit breakers whose state every process shares through Redis (pybreaker, Redis storage).

One breaker per external dependency, e.g. breaker("ai") or breaker("crm:42"). When it is
open, calls fail at once with pybreaker.CircuitBreakerError instead of waiting on a timeout.
"""

import os

import pybreaker
import redis
from django.conf import settings

from leadflow.redis_keys import breaker_namespace

_breakers: dict[str, pybreaker.CircuitBreaker] = {}
_pid: int | None = None


def _storage_client() -> redis.Redis:
    # pybreaker decodes what it reads itself and expects bytes.
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1.0)


def breaker(name: str) -> pybreaker.CircuitBreaker:
    """The process's breaker for `name`, its state in Redis under lf:<name>:pybreaker:*.

    Guard a call with `with breaker(name).calling():` — unlike .call(), it does not hold the
    breaker's in-process lock during the call, so threads of one process call concurrently.
    """
    global _pid
    if _pid != os.getpid():  # never share a Redis connection across fork
        _breakers.clear()
        _pid = os.getpid()
    found = _breakers.get(name)
    if found is None:
        storage = pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, _storage_client(), namespace=breaker_namespace(name)
        )
        found = pybreaker.CircuitBreaker(
            fail_max=settings.BREAKER_FAIL_MAX,
            reset_timeout=settings.BREAKER_RESET_SECONDS,
            state_storage=storage,
            name=name,
        )
        _breakers[name] = found
    return found


def breaker_state(name: str) -> str:
    """closed, open or half-open, as every process sees it."""
    return breaker(name).current_state
