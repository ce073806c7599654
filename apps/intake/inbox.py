"""The absorber's Redis state: per (tier, tenant) inboxes, the backlog counters, in-flight batches.

Key names live here and nowhere else. Admission pushes (admission.py); the dispatcher
claims (claim_batch) and, once Celery holds the batch, releases it (release_batch).
"""

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from leadflow.redis_conn import get_redis, lua_script
from workers.queues import TIERS

log = logging.getLogger(__name__)

_LUA = Path(__file__).parent / "lua"

BACKLOG_KEY = "lf:backlog"  # hash tier -> leads waiting in inboxes
CLAIMED_KEY = "lf:claimed"  # hash tier -> leads ever claimed (positions of queued leads)
DRAIN_KEY = "lf:drain"  # hash tier|"total" -> leads/s, written by the controller
MODE_KEY = "lf:mode"  # the platform mode, written by the controller
CLOSED_KEY = "lf:closed"  # hash tier -> Retry-After (s) while the controller closes a tier
INFLIGHT_KEY = "lf:inflight"  # zset batch id -> claim time


def inbox_key(tier: str, tenant_id: int | str) -> str:
    return f"lf:inbox:{tier}:{tenant_id}"


def active_tenants_key(tier: str) -> str:
    return f"lf:active:{tier}"


def inflight_batch_key(batch_id: str) -> str:
    return f"lf:inflight:{batch_id}"


def dedup_key(tenant_id: int, digest: str) -> str:
    return f"lf:dedup:{tenant_id}:{digest}"


def trace_key(trace_id: str) -> str:
    return f"lf:trace:{trace_id}"


# A tenant's admission state (apps/intake/lua/admit.lua keeps it).
def request_window_key(tenant_id: int) -> str:
    return f"lf:rate:{tenant_id}"


def ip_bucket_key(tenant_id: int | None, ip: str) -> str:
    """Requests from one IP address: inside a tenant, or without a valid key (tenant None)."""
    return f"lf:ip:{tenant_id if tenant_id is not None else 'anonymous'}:{ip}"


def credits_key(tenant_id: int) -> str:
    return f"lf:credits:{tenant_id}"


def budget_key(tenant_id: int) -> str:
    return f"lf:budget:{tenant_id}"


def entry_open(fields: dict) -> bytes:
    """An inbox entry (JSON) without its closing brace: admission appends the tier it decides
    (and "demoted") inside the script. entries_decode reads the completed entry."""
    return orjson.dumps(fields)[:-1]


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    batch_id: str
    tier: str
    entries: list[bytes]
    # The last tenant that gave leads: the dispatcher's round robin resumes after it.
    last_tenant_id: int | None = None


def claim_batch(tier: str, tenant_ids: list[int], max_leads: int) -> ClaimedBatch | None:
    """Take up to max_leads of the tier, from the tenants' inboxes in the order given (oldest
    first in each), as one in-flight batch; None when they were all empty (claim.lua)."""
    batch_id = uuid.uuid4().hex
    claimed = lua_script(_LUA / "claim.lua")(
        keys=[
            active_tenants_key(tier),
            BACKLOG_KEY,
            INFLIGHT_KEY,
            inflight_batch_key(batch_id),
            CLAIMED_KEY,
            *(inbox_key(tier, tenant_id) for tenant_id in tenant_ids),
        ],
        args=[max_leads, tier, batch_id, time.time(), *tenant_ids],
    )
    if not claimed:
        return None
    last_tenant, entries = claimed
    return ClaimedBatch(batch_id, tier, entries, last_tenant_id=int(last_tenant))


def tier_waiting(tier: str) -> int:
    """Leads waiting in the tier's inboxes."""
    return int(get_redis().hget(BACKLOG_KEY, tier) or 0)


def entries_decode(raw_entries: list[str]) -> list[dict]:
    """Inbox entries (JSON, as admission wrote them) back into lead dicts.

    orjson refuses what admission never writes (a lone surrogate, from an operator's replay of
    an old entry): json reads it, and pool A then quarantines the lead. An entry that is not
    JSON at all names no lead, and is dropped with an error in the log.
    """
    decoded = []
    for raw in raw_entries:
        try:
            decoded.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            try:
                decoded.append(json.loads(raw))
            except ValueError:
                log.error("dropping an inbox entry that is not JSON: %.300r", raw)
    return decoded


def release_batch(batch_id: str) -> None:
    """Pool A has stored the batch in PostgreSQL: forget the in-flight copy."""
    get_redis().pipeline().delete(inflight_batch_key(batch_id)).zrem(
        INFLIGHT_KEY, batch_id
    ).execute()


def stale_batches(older_than_seconds: float) -> list[ClaimedBatch]:
    """In-flight batches claimed (or last republished) long ago and never released.

    Each one returned is stamped with the current time, so it is returned again only after
    another full period.
    """
    client = get_redis()
    now = time.time()
    batches = []
    for raw_id in client.zrangebyscore(INFLIGHT_KEY, "-inf", now - older_than_seconds):
        batch_id = raw_id.decode()
        entries = client.lrange(inflight_batch_key(batch_id), 0, -1)
        if not entries:
            client.zrem(INFLIGHT_KEY, batch_id)
            continue
        client.zadd(INFLIGHT_KEY, {batch_id: now}, xx=True)
        batches.append(ClaimedBatch(batch_id, orjson.loads(entries[0])["tier"], entries))
    return batches


def active_tenants(tier: str) -> list[int]:
    return sorted(int(t) for t in get_redis().smembers(active_tenants_key(tier)))


@dataclass(frozen=True, slots=True)
class TierBacklog:
    tier: str
    waiting: int
    oldest_received_at: float | None  # epoch seconds of the oldest waiting lead


def backlog_by_tier() -> dict[str, TierBacklog]:
    """Waiting leads and the age of the oldest, per tier, read from the inboxes themselves."""
    client = get_redis()
    counts = client.hmget(BACKLOG_KEY, list(TIERS))
    result = {}
    for tier, count in zip(TIERS, counts, strict=True):
        tenants = client.smembers(active_tenants_key(tier))
        pipe = client.pipeline(transaction=False)
        for tenant in tenants:
            pipe.lindex(inbox_key(tier, tenant.decode()), 0)
        heads = [orjson.loads(h)["received_at"] for h in pipe.execute() if h]
        result[tier] = TierBacklog(
            tier=tier, waiting=int(count or 0), oldest_received_at=min(heads) if heads else None
        )
    return result


def tenant_backlog(tenant_id: int) -> dict[str, int]:
    pipe = get_redis().pipeline(transaction=False)
    for tier in TIERS:
        pipe.llen(inbox_key(tier, tenant_id))
    return dict(zip(TIERS, pipe.execute(), strict=True))
