"""The intake hot path's view of tenants: an in-process cache, so authentication costs no SQL.

A change to a tenant or key (admin, services) publishes on a Redis channel after commit;
every process listens and drops its cache. A TTL bounds staleness if a message is missed.
"""

import os
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F

from apps.tenants.models import ApiKey, api_key_digest
from leadflow.redis_conn import get_redis

INVALIDATION_CHANNEL = "lf:tenants:changed"
# Unknown keys are remembered too, so a client hammering a wrong key cannot turn into SQL load.
_NEGATIVE_TTL_SECONDS = 5.0
_MAX_ENTRIES = 100_000


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


_entries: dict[str, tuple[TenantAuth | None, float]] = {}
_listener_pid: int | None = None
_lock = threading.Lock()


def tenant_for_key(raw_key: str) -> TenantAuth | None:
    """The active tenant owning this unrevoked key, or None."""
    _ensure_listener()
    digest = api_key_digest(raw_key)
    now = time.monotonic()
    hit = _entries.get(digest)
    if hit is not None and hit[1] > now:
        return hit[0]
    auth = _load(digest)
    if len(_entries) >= _MAX_ENTRIES:
        _entries.clear()
    ttl = settings.TENANT_CACHE_TTL_SECONDS if auth else _NEGATIVE_TTL_SECONDS
    _entries[digest] = (auth, now + ttl)
    return auth


def _load(digest: str) -> TenantAuth | None:
    row = (
        ApiKey.objects.filter(digest=digest, revoked_at__isnull=True, tenant__is_active=True)
        .values(
            "tenant_id",
            tenant_name=F("tenant__name"),
            rate_limit_per_second=F("tenant__rate_limit_per_second"),
            per_ip_rate_limit_per_second=F("tenant__per_ip_rate_limit_per_second"),
            critical_capacity=F("tenant__critical_capacity"),
            critical_refill_per_second=F("tenant__critical_refill_per_second"),
            hourly_budget=F("tenant__hourly_budget"),
        )
        .first()
    )
    return TenantAuth(**row) if row else None


def clear() -> None:
    _entries.clear()


def invalidate_everywhere() -> None:
    """Drop every process's cache once the current transaction commits."""
    transaction.on_commit(_publish)


def _publish() -> None:
    clear()
    get_redis().publish(INVALIDATION_CHANNEL, b"1")


def _ensure_listener() -> None:
    # Started lazily and per process: gunicorn forks workers after import.
    global _listener_pid
    if _listener_pid == os.getpid():
        return
    with _lock:
        if _listener_pid == os.getpid():
            return
        _entries.clear()
        thread = threading.Thread(target=_listen, name="tenant-cache-invalidation", daemon=True)
        thread.start()
        _listener_pid = os.getpid()


def _listen() -> None:
    while True:
        try:
            pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(INVALIDATION_CHANNEL)
            # Anything cached before the subscription may have missed a message.
            _entries.clear()
            for _message in pubsub.listen():
                _entries.clear()
        except Exception:  # noqa: BLE001 - the listener must outlive Redis restarts
            _entries.clear()
            time.sleep(1.0)
