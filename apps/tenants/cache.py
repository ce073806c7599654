"""The intake hot path's view of tenants: an in-process cache, so authentication costs no SQL.

A change to a tenant or key (admin, services) publishes on a Redis channel after commit;
every process listens and drops its cache. A TTL bounds staleness if a message is missed.

While PostgreSQL is unreachable, a key loaded in the last TENANT_CACHE_STALE_SECONDS is still
served: from this process's cache, or from the copy every API process leaves in Redis when it
loads a key (a hash dropped with every invalidation), so that a worker started during the
outage serves the keys its siblings knew. Any other key raises TenantsUnavailable (503). The
database is tried again at most every DATABASE_RETRY_SECONDS per process, so an outage costs
the hot path no connection attempt per request; the first load that succeeds ends it.

Unknown keys are remembered for a few seconds too, and a caller can pass `before_database`,
run before any query (the intake's per-IP limit), so a flood of unknown keys costs no SQL
beyond what that limit lets through. A key's expiry travels with its entry: the caller
refuses an expired key (apps/intake/authentication.py), at the second it expires.
"""

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import orjson
import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import F

from apps.tenants import usage
from apps.tenants.models import ApiKey, api_key_digest
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import TENANTS_AUTH_KEY, TENANTS_CHANGED_CHANNEL

log = logging.getLogger(__name__)

# Unknown keys are remembered too, so a client hammering a wrong key cannot turn into SQL load.
_NEGATIVE_TTL_SECONDS = 5.0
_MAX_ENTRIES = 100_000
DATABASE_RETRY_SECONDS = 2.0
# What a database that cannot be reached raises; anything else from a query is a bug.
DATABASE_DOWN_ERRORS = (OperationalError, InterfaceError)


class TenantsUnavailable(Exception):
    """PostgreSQL is unreachable, and the key is not one known from the stale-serving window."""


@dataclass(frozen=True, slots=True)
class TenantAuth:
    """Who is calling, and the limits admission applies to them."""

    tenant_id: int
    tenant_name: str
    rate_limit_per_second: int
    per_ip_rate_limit_per_second: int | None
    critical_capacity: int
    critical_refill_per_second: float
    hourly_budget: int
    key_id: int = 0  # the ApiKey row, for its last-used time (apps/tenants/usage.py)
    key_expires_at: float | None = None  # epoch seconds; None: never
    retention_hours: int = 48  # Tenant.retention_hours: caps the TTL of the leads' Redis keys

    def key_expired(self, now: float) -> bool:
        return self.key_expires_at is not None and self.key_expires_at <= now


@dataclass(slots=True)
class DatabaseState:
    """PostgreSQL as this process last found it."""

    reachable: bool = True
    since: float = 0.0  # epoch seconds of the last change (0: not tried yet)
    error: str = ""
    retry_at: float = 0.0  # monotonic: no attempt before, while unreachable


# digest -> (the tenant, or None for an unknown key; fresh until (monotonic); loaded at (epoch))
_entries: dict[str, tuple[TenantAuth | None, float, float]] = {}
_shared_pending: dict[str, bytes] = {}  # digest -> record, for the Redis copy
_database = DatabaseState()
_listener_pid: int | None = None
_lock = threading.Lock()


def tenant_for_key(
    raw_key: str, before_database: Callable[[], None] | None = None
) -> TenantAuth | None:
    """The active tenant owning this unrevoked key (expired or not: see key_expired), or None;
    TenantsUnavailable when the database is unreachable and the key was not loaded within the
    stale-serving window. `before_database` runs before any query, and may raise to stop it."""
    _ensure_listener()
    digest = api_key_digest(raw_key)
    now = time.monotonic()
    hit = _entries.get(digest)
    if hit is not None and hit[1] > now:
        return hit[0]
    if now >= _database.retry_at:
        if before_database is not None:
            before_database()
        try:
            auth = _load(digest)
        except DATABASE_DOWN_ERRORS as error:
            _database_failed(error)
        else:
            _database_reached()
            _remember(digest, auth, now)
            return auth
    return _stale(digest, hit)


def _load(digest: str) -> TenantAuth | None:
    # Django's per-request housekeeping, which the fast POST path (a plain WSGI app) never
    # gets from Django's handler: a connection broken by a restart of PostgreSQL (errors seen),
    # or past CONN_MAX_AGE, is closed here, and CONN_HEALTH_CHECKS tests the one kept before
    # it is used. Not inside a transaction (a test's, or a caller's), which it would break.
    if not connection.in_atomic_block:
        connection.close_if_unusable_or_obsolete()
    row = (
        ApiKey.objects.filter(digest=digest, revoked_at__isnull=True, tenant__is_active=True)
        .values(
            "tenant_id",
            "expires_at",
            key_id=F("id"),
            tenant_name=F("tenant__name"),
            rate_limit_per_second=F("tenant__rate_limit_per_second"),
            per_ip_rate_limit_per_second=F("tenant__per_ip_rate_limit_per_second"),
            critical_capacity=F("tenant__critical_capacity"),
            critical_refill_per_second=F("tenant__critical_refill_per_second"),
            hourly_budget=F("tenant__hourly_budget"),
            retention_hours=F("tenant__retention_hours"),
        )
        .first()
    )
    if not row:
        return None
    expires_at = row.pop("expires_at")
    return TenantAuth(**row, key_expires_at=expires_at.timestamp() if expires_at else None)


def _remember(digest: str, auth: TenantAuth | None, now: float) -> None:
    if len(_entries) >= _MAX_ENTRIES:
        _entries.clear()
    loaded_at = time.time()
    ttl = settings.TENANT_CACHE_TTL_SECONDS if auth else _NEGATIVE_TTL_SECONDS
    _entries[digest] = (auth, now + ttl, loaded_at)
    if auth is not None:
        _shared_write(digest, auth, loaded_at)


def _stale(digest: str, hit) -> TenantAuth:
    """A tenant loaded within the stale-serving window, from here or from Redis."""
    oldest = time.time() - settings.TENANT_CACHE_STALE_SECONDS
    if hit is not None and hit[0] is not None and hit[2] >= oldest:
        return hit[0]
    shared = _shared_read(digest)
    if shared is not None and shared[1] >= oldest:
        auth, loaded_at = shared
        _entries[digest] = (auth, 0.0, loaded_at)  # stale: the database is asked first again
        return auth
    raise TenantsUnavailable(f"PostgreSQL is unreachable ({_database.error})")


def _shared_write(digest: str, auth: TenantAuth, loaded_at: float) -> None:
    # Written by the listener thread within a second, so that a request never waits on it
    # (a stalled Redis would cost it a timeout more).
    _shared_pending[digest] = orjson.dumps({**asdict(auth), "loaded_at": loaded_at})


def _shared_flush() -> None:
    records = {}
    while _shared_pending:
        try:
            digest, record = _shared_pending.popitem()
        except KeyError:  # emptied by another thread (clear) meanwhile
            break
        records[digest] = record
    if records:
        pipe = get_redis().pipeline(transaction=False)
        pipe.hset(TENANTS_AUTH_KEY, mapping=records)
        pipe.expire(TENANTS_AUTH_KEY, int(settings.TENANT_CACHE_STALE_SECONDS) + 60)
        pipe.execute()


def _shared_read(digest: str) -> tuple[TenantAuth, float] | None:
    try:
        record = get_redis().hget(TENANTS_AUTH_KEY, digest)
    except redis.RedisError:
        return None
    if record is None:
        return None
    fields = orjson.loads(record)
    loaded_at = fields.pop("loaded_at")
    return TenantAuth(**fields), loaded_at


def _database_failed(error: Exception) -> None:
    if _database.reachable:
        log.warning("tenant cache: PostgreSQL unreachable, serving known keys: %s", error)
        _database.reachable, _database.since = False, time.time()
    _database.error = f"{type(error).__name__}: {str(error).strip()[:200]}"
    _database.retry_at = time.monotonic() + DATABASE_RETRY_SECONDS


def _database_reached() -> None:
    if not _database.reachable:
        log.warning("tenant cache: PostgreSQL reachable again")
        _database.reachable, _database.since, _database.error = True, time.time(), ""
    _database.retry_at = 0.0


def database_probe() -> DatabaseState:
    """Try PostgreSQL now on this process's own connection (kept between requests, never a
    new one per call), unless it failed less than DATABASE_RETRY_SECONDS ago."""
    if time.monotonic() >= _database.retry_at:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DATABASE_DOWN_ERRORS as error:
            _database_failed(error)
        else:
            _database_reached()
    return _database


def keys_servable_without_database() -> bool:
    """Whether any key could be served now if PostgreSQL stays down."""
    oldest = time.time() - settings.TENANT_CACHE_STALE_SECONDS
    if any(auth is not None and loaded_at >= oldest for auth, _, loaded_at in _entries.values()):
        return True
    try:
        return bool(get_redis().hlen(TENANTS_AUTH_KEY))
    except redis.RedisError:
        return False


def clear() -> None:
    _entries.clear()
    _shared_pending.clear()


def _expire_all() -> None:
    """Ask the database again for every key, but keep what is known for an outage."""
    for digest, (auth, _, loaded_at) in list(_entries.items()):
        _entries[digest] = (auth, 0.0, loaded_at)


def invalidate_everywhere() -> None:
    """Drop every process's cache once the current transaction commits."""
    transaction.on_commit(_publish)


def _publish() -> None:
    clear()
    pipe = get_redis().pipeline(transaction=False)
    pipe.delete(TENANTS_AUTH_KEY)  # a revoked key must not be served from the outage copy either
    pipe.publish(_channel(), b"1")
    pipe.execute()


def _channel() -> str:
    # Pub/sub ignores Redis's numbered databases: two deployments (or test runs) sharing one
    # server on different databases would otherwise drop each other's caches.
    return f"{TENANTS_CHANGED_CHANNEL}:{get_redis().connection_pool.connection_kwargs.get('db', 0)}"


def _ensure_listener() -> None:
    # Started lazily and per process: gunicorn forks workers after import.
    global _listener_pid
    if _listener_pid == os.getpid():
        return
    with _lock:
        if _listener_pid == os.getpid():
            return
        clear()
        thread = threading.Thread(target=_listen, name="tenant-cache-invalidation", daemon=True)
        thread.start()
        _listener_pid = os.getpid()


def _listen() -> None:
    while True:
        pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(_channel())
            # Anything cached before the subscription may have missed a message.
            _expire_all()
            while True:
                # Polled, not pubsub.listen(): the client's read timeout (short in the API)
                # bounds a read, and an idle channel is not an error.
                if pubsub.get_message(timeout=1.0) is not None:
                    clear()
                _shared_flush()
                usage.flush()
        except Exception:  # noqa: BLE001 - the listener must outlive Redis restarts
            _expire_all()
            time.sleep(1.0)
        finally:
            pubsub.close()
