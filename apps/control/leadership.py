"""One control instance leads at a time: a lease in Redis (a key holding the leader's token, with
an expiry) renewed by a thread of its own, and that token checked by Redis itself on every
Redis write that acts as the leader (fencing).

Why both. The renewal thread keeps the lease however long a tick, a dispatch pass or a
database call takes, so a slow step never makes a second leader. No thread helps a process
that does not run at all (SIGSTOP, a paused VM, swap): its lease lapses, a standby takes over,
and the frozen one wakes up in the middle of a step. So the leader's Redis writes carry the
token and Redis refuses them once the key holds another: the dispatcher's claims and
republishes (apps/inbox/lua/claim.lua, republish.lua) and the controller's published state
(Lease.transaction, a WATCH on the key). Before each step the loop also checks the lease
locally: it counts as held until the last renewal sent plus the lease, less a margin; a
renewal refused, failing past that point or coming after it ends the term, and the process
stands by.

A loop that makes no progress for LEADFLOW_CONTROL_STALL_SECONDS (a hung connection) stops the
renewals and hands the lease over, rather than holding it without leading.

Not fenced: PostgreSQL writes (audit rows, the ledger's sent marks), Celery publishes and
remote control. They run only while the lease is held locally; a process frozen between that
check and the write does that one write after waking, and each is idempotent (stages by
trace_id, reports rebuilt in place) or harmless (an audit row).
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import redis
from django.conf import settings
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

from apps.inbox import Fence
from leadflow.env import env_float
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import CONTROL_LEADER_KEY

log = logging.getLogger(__name__)

LEASE_SECONDS = env_float("LEADFLOW_CONTROL_LEASE_SECONDS", 5.0)
STALL_SECONDS = env_float("LEADFLOW_CONTROL_STALL_SECONDS", 30.0)
# Renewed three times a lease: two renewals can fail (a Redis blink) before it lapses.
RENEWALS_PER_LEASE = 3
# Redis expires the key on its own clock: the leader stops this much before its own reckoning
# of the lease's end (clock rates, the renewal's round trip).
SAFETY_MARGIN_SECONDS = 0.5


class LeadershipLost(Exception):
    """This instance's term is over; the reason says why."""


class Lease:
    """One term as the leader: renewed by a thread until release() or until it is lost."""

    def __init__(self, lock: Lock, seconds: float, stall_seconds: float, sent: float):
        self._lock = lock
        self.key = lock.name
        self.token: bytes = lock.local.token
        self.seconds = seconds
        self.stall_seconds = stall_seconds
        self._valid_until = sent + seconds - SAFETY_MARGIN_SECONDS
        self._progress_at = time.monotonic()
        self._lost: str | None = None
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="control-lease", daemon=True)
        self._renewer.start()

    @property
    def fence(self) -> Fence:
        return Fence(self.key, self.token)

    @property
    def lost_reason(self) -> str | None:
        return self._lost

    def held(self) -> bool:
        if self._lost is None and time.monotonic() >= self._valid_until:
            self._end("the lease lapsed before it was renewed")
        return self._lost is None

    def check(self) -> None:
        """Raise LeadershipLost unless the lease is held."""
        if not self.held():
            raise LeadershipLost(self._lost)

    def progress(self) -> None:
        """The loop is alive: renewals go on (see STALL_SECONDS)."""
        self._progress_at = time.monotonic()

    def transaction(self, write: Callable[[redis.client.Pipeline], None]) -> None:
        """Run write(pipe) as one MULTI/EXEC that Redis applies only while the lease key holds
        this term's token (a renewal in between only makes redis-py try again)."""

        def attempt(pipe: redis.client.Pipeline) -> None:
            if pipe.get(self.key) != self.token:
                self._end("another instance holds the lease")
                raise LeadershipLost(self._lost)
            pipe.multi()
            write(pipe)

        get_redis().transaction(attempt, self.key)

    def release(self) -> None:
        """End the term; the key goes at once (if still ours), so a standby need not wait."""
        self._end("released")
        if self._renewer is not threading.current_thread():
            self._renewer.join(timeout=self.seconds)
        with contextlib.suppress(LockError, redis.RedisError):
            self._lock.release()

    def _end(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
        self._stop.set()

    def _renew(self) -> None:
        every = self.seconds / RENEWALS_PER_LEASE
        while not self._stop.wait(every):
            stalled = time.monotonic() - self._progress_at
            if stalled > self.stall_seconds:
                self._end(f"the loop made no progress for {stalled:.0f} s; lease handed over")
                with contextlib.suppress(LockError, redis.RedisError):
                    self._lock.release()
                return
            sent = time.monotonic()
            try:
                self._lock.reacquire()
            except LockNotOwnedError:
                self._end("another instance holds the lease")
                return
            except redis.RedisError:
                if not self.held():  # it lapsed while Redis failed: held() ended the term
                    return
                continue  # tried again at the next renewal, within the lease
            if sent >= self._valid_until:
                # The loop may already have stopped leading: late is lost, however it went.
                self._end("the lease was renewed too late")
                return
            self._valid_until = sent + self.seconds - SAFETY_MARGIN_SECONDS


class Leadership:
    """This process's bid for the lease; acquire() returns a Lease (a term) or None."""

    def __init__(
        self,
        key: str = CONTROL_LEADER_KEY,
        seconds: float = LEASE_SECONDS,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self.key = key
        self.seconds = seconds
        self.stall_seconds = stall_seconds
        # Its own client, with timeouts: a hung Redis must fail the renewal, not block it.
        timeout = seconds / RENEWALS_PER_LEASE
        self._client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def acquire(self, wait_seconds: float) -> Lease | None:
        """Take the lease if it is free within wait_seconds (standbys poll every 0.1 s)."""
        lock = self._client.lock(self.key, timeout=self.seconds, thread_local=False)
        started = time.monotonic()  # the lease runs from no later than this
        if not lock.acquire(blocking=True, blocking_timeout=wait_seconds):
            return None
        return Lease(lock, self.seconds, self.stall_seconds, sent=started)
