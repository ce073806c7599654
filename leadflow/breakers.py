"""Circuit breakers whose state every process shares through Redis (pybreaker, Redis storage).

One breaker per external dependency, e.g. breaker("ai") or breaker("crm:42"). When it is
open, calls fail at once with pybreaker.CircuitBreakerError instead of waiting on a timeout.
It opens after LEADFLOW_BREAKER_FAIL_MAX failures in a row; after LEADFLOW_BREAKER_RESET_SECONDS
calls go through again (half-open), and LEADFLOW_BREAKER_SUCCESS_THRESHOLD successes in a row,
counted in Redis whichever processes made them, close it.

The dependency's recovery is an event recorded once: the first success, with the breaker
closed, after a failure (the success that closes it after an outage, or the next one after
failures too few to open it). breaker_recovered_at() says when; degraded enrichments are redone
from it (apps/control/backfill.py).
"""

import logging
import os
import time

import pybreaker
import redis
from django.conf import settings

from leadflow.redis_conn import get_redis
from leadflow.redis_keys import (
    breaker_failing_key,
    breaker_namespace,
    breaker_recovered_key,
    breaker_recoveries_key,
)

log = logging.getLogger(__name__)

_breakers: dict[str, pybreaker.CircuitBreaker] = {}
_pid: int | None = None


class SharedBreaker(pybreaker.CircuitBreaker):
    """A pybreaker breaker that adopts a state another process set without resetting the
    shared counts.

    pybreaker treats a state found in Redis that differs from its cached one as a transition of
    its own: on seeing half-open it resets the success counter, so each process that noticed
    the trial period would wipe the successes the others had counted (3 successes in a row
    could take any number). Here a state changed elsewhere is adopted as it is, and the
    listeners are still told.
    """

    @property
    def state(self):
        stored = self.current_state
        if stored != self._state.name:
            with self._lock:
                previous = self._state
                if stored != previous.name:
                    self._state = self._create_new_state(stored, prev_state=previous)
                    for listener in self.listeners:
                        listener.state_change(self, previous, self._state)
        return self._state

    @state.setter
    def state(self, state_str: str) -> None:  # a transition made here: pybreaker's own
        with self._lock:
            self._state = self._create_new_state(state_str, prev_state=self._state, notify=True)

    @property
    def state_seen(self) -> str:
        """The state as this process last read or set it (no Redis round trip)."""
        return self._state.name


class _RecoveryRecorder(pybreaker.CircuitBreakerListener):
    """A failure sets the breaker's failing mark; the first success with the breaker closed
    takes it (DEL answers 1 to one caller only, whichever process or thread) and records the
    time: once per recovery, however many processes succeed at that moment."""

    def failure(self, cb, exc) -> None:
        try:
            get_redis().set(breaker_failing_key(cb.name), 1)
        except redis.RedisError as error:  # never fails the call
            log.debug("breaker %s: failure not marked: %r", cb.name, error)

    def success(self, cb) -> None:
        # pybreaker tells the listeners after the state moved: the 3rd success in half-open
        # has closed the breaker by now; the 1st and 2nd find it half-open and wait.
        if cb.state_seen != pybreaker.STATE_CLOSED:
            return
        try:
            client = get_redis()
            if client.delete(breaker_failing_key(cb.name)):
                with client.pipeline(transaction=False) as pipe:
                    pipe.set(breaker_recovered_key(cb.name), repr(time.time()))
                    pipe.incr(breaker_recoveries_key(cb.name))
                    pipe.execute()
                log.info("breaker %s: the dependency answers again", cb.name)
        except redis.RedisError as error:
            log.debug("breaker %s: recovery not recorded: %r", cb.name, error)


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
        found = SharedBreaker(
            fail_max=settings.BREAKER_FAIL_MAX,
            reset_timeout=settings.BREAKER_RESET_SECONDS,
            success_threshold=settings.BREAKER_SUCCESS_THRESHOLD,
            state_storage=storage,
            listeners=[_RecoveryRecorder()],
            name=name,
        )
        _breakers[name] = found
    return found


def breaker_state(name: str) -> str:
    """closed, open or half-open, as every process sees it."""
    return breaker(name).current_state


def breaker_recovered_at(name: str) -> float | None:
    """When the dependency last answered again after failing (epoch seconds), or None."""
    raw = get_redis().get(breaker_recovered_key(name))
    return float(raw) if raw else None


def breaker_recoveries(name: str) -> int:
    """How many recoveries were recorded for `name`."""
    return int(get_redis().get(breaker_recoveries_key(name)) or 0)


def breaker_failing(name: str) -> bool:
    """Whether a call failed since the dependency last answered with the breaker closed."""
    return bool(get_redis().exists(breaker_failing_key(name)))
