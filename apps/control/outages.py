"""What the control process does when a dependency fails: it carries on without it.

Redis (inboxes, published state, the lease), the broker (Celery's queues: the same Redis unless
CELERY_BROKER_URL names another server) and PostgreSQL (policy, audit, ledger, sweeps) can each
be down, restarting, slow or full. Every step of control's loops runs as a Step: an error of a
dependency skips that step for a short back-off (0.25 s, doubling up to 2 s) while the other
steps go on, and the outage is logged once when it begins and once when it ends, never per
attempt. An error that is not a dependency's (a bug) is not caught: the process exits, loudly,
and its supervisor starts it again.
"""

import logging
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import django.db
import kombu.exceptions
import redis
from django.conf import settings

from leadflow.redis_conn import get_redis

log = logging.getLogger(__name__)

# A dependency down, restarting, refusing writes (Redis OOM) or blinking; never the code's fault.
DEPENDENCY_ERRORS = (
    django.db.OperationalError,
    django.db.InterfaceError,
    redis.RedisError,
    kombu.exceptions.OperationalError,
    ConnectionError,  # a socket error that a client let through unwrapped
    TimeoutError,
)

REDIS = "Redis"
POSTGRESQL = "PostgreSQL"
BACKOFF_MIN_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 2.0


def _server(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"


def broker_name() -> str:
    """The broker's name in the log: "Redis" when it is the same server (one outage, one name)."""
    if _server(settings.CELERY_BROKER_URL) == _server(settings.REDIS_URL):
        return REDIS
    return "the broker"


def dependency_of(error: BaseException) -> str:
    if isinstance(error, django.db.OperationalError | django.db.InterfaceError):
        return POSTGRESQL
    if isinstance(error, kombu.exceptions.OperationalError):
        return broker_name()
    return REDIS


@dataclass
class _Outage:
    since: float
    failing: set[str] = field(default_factory=set)  # the steps that failed on it since


class Outages:
    """The dependencies down, as the steps find them. An outage begins with the first step that
    fails on a dependency and ends when every step that failed on it has succeeded again, so a
    partial failure (a full Redis still answers reads) stays one outage, not one per tick."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._down: dict[str, _Outage] = {}

    def failed(self, step: str, error: BaseException) -> None:
        dependency = dependency_of(error)
        with self._lock:
            outage = self._down.get(dependency)
            if outage is None:
                outage = self._down[dependency] = _Outage(since=time.monotonic())
                log.error(
                    "control: %s unavailable (%s: %s: %s); carrying on with what does not need "
                    "it, and trying again every %s s at most",
                    dependency,
                    step,
                    type(error).__name__,
                    str(error)[:300],
                    BACKOFF_MAX_SECONDS,
                )
            outage.failing.add(step)

    def succeeded(self, step: str, dependencies: frozenset[str]) -> None:
        if not self._down:  # the common case, without the lock
            return
        with self._lock:
            for dependency in dependencies & self._down.keys():
                outage = self._down[dependency]
                outage.failing.discard(step)
                if not outage.failing:
                    del self._down[dependency]
                    log.warning(
                        "control: %s available again after %.1f s",
                        dependency,
                        time.monotonic() - outage.since,
                    )

    def forget(self, steps: set[str]) -> None:
        """Steps that will not run again soon (the term ended, or their condition no longer
        holds): they no longer hold an outage open; the next step to succeed on the
        dependency ends it."""
        if not self._down:
            return
        with self._lock:
            for outage in self._down.values():
                outage.failing -= steps

    def down(self) -> set[str]:
        with self._lock:
            return set(self._down)


# One per process: the loops (main thread, database thread) share what they find.
outages = Outages()


def _idle_connections_drop() -> None:
    """Close the idle connections of the process's Redis client: after a restart of Redis they
    are dead, and the first command on each would fail (a watched transaction does not retry),
    making one outage look like two."""
    get_redis().connection_pool.disconnect(inuse_connections=False)


class Step:
    """One guarded piece of a loop, using `dependencies`. run() calls it unless it is backing
    off after a failure; returns its result, or None when it failed or was skipped."""

    def __init__(self, name: str, dependencies: set[str], tracker: Outages = outages) -> None:
        self.name = name
        self.dependencies = frozenset(dependencies)
        self._outages = tracker
        self._delay = 0.0
        self._next_at = 0.0

    @property
    def backing_off(self) -> bool:
        return time.monotonic() < self._next_at

    def idle(self) -> None:
        """Not run this time, by choice (e.g. backfill outside NORMAL mode): it must not keep
        an outage open until it runs again."""
        self._outages.forget({self.name})

    def run(self, function, *args):
        if self.backing_off:
            return None
        try:
            result = function(*args)
        except DEPENDENCY_ERRORS as error:
            self._outages.failed(self.name, error)
            if isinstance(error, redis.RedisError):
                _idle_connections_drop()
            self._delay = min(max(self._delay * 2, BACKOFF_MIN_SECONDS), BACKOFF_MAX_SECONDS)
            self._next_at = time.monotonic() + self._delay
            return None
        self._delay = 0.0
        self._outages.succeeded(self.name, self.dependencies)
        return result
