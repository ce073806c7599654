"""Reads of the platform's state for operators: the control process's metrics and the admin
status page. Nothing here changes anything."""

import time
from dataclasses import dataclass

import orjson
import pybreaker
from django.db.models import Count, Q

from apps.control.models import DeferredWork
from apps.crm.models import DeadLetter
from apps.tenants.models import Tenant
from leadflow import redis_keys
from leadflow.celery import SENT_AT_HEADER
from leadflow.queues import POOLS, TIERS, pool_queues
from leadflow.redis_conn import get_inbox_redis, get_redis
from leadflow.redis_keys import breaker_namespace, pool_workers_key

# A worker alive sends a heartbeat every 2 s (Celery's default); missing this long, it is gone.
WORKER_STALE_SECONDS = 10.0

BREAKER_STATES = (pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN)


@dataclass(frozen=True, slots=True)
class QueueFigure:
    messages: int
    lag_seconds: float  # age of the oldest message waiting; 0 when none waits


def queue_figures() -> dict[str, QueueFigure]:
    """Each Celery queue's length and the age of its oldest message (kombu's Redis transport
    pushes on the left and pops on the right: the oldest is the last element). The age comes
    from the header the Celery app stamps on every message it publishes (leadflow/celery.py)."""
    names = [name for pool in POOLS for name in pool_queues(pool)]
    pipe = get_redis().pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
        pipe.lindex(name, -1)
    replies = pipe.execute()
    now = time.time()
    figures = {}
    for index, name in enumerate(names):
        length, oldest = replies[2 * index], replies[2 * index + 1]
        lag = 0.0
        if oldest:
            try:
                sent_at = orjson.loads(oldest).get("headers", {}).get(SENT_AT_HEADER)
            except orjson.JSONDecodeError:
                sent_at = None
            if sent_at:
                lag = max(now - float(sent_at), 0.0)
        figures[name] = QueueFigure(messages=int(length), lag_seconds=lag)
    return figures


@dataclass(frozen=True, slots=True)
class TenantInbox:
    waiting: int  # leads in the tenant's inbox of one tier
    lag_seconds: float  # age of the oldest of them (the inbox's head); 0 when none waits


def tenant_inboxes() -> dict[int, dict[str, TenantInbox]]:
    """Per tenant with leads waiting, per tier it has some in: how many, and how long the oldest
    has waited. Two round trips whatever the number of tenants: the tiers' active tenants, then
    each active inbox's length and head (admission appends, the dispatcher takes from the head).
    Only the inboxes of active tenants are read, so thousands of idle tenants cost nothing."""
    client = get_inbox_redis()
    pipe = client.pipeline(transaction=False)
    tiers = [tier for tier in TIERS for _ in redis_keys.shards()]
    for tier in TIERS:
        for shard in redis_keys.shards():
            pipe.smembers(redis_keys.active_tenants_key(tier, shard))
    active = pipe.execute()
    keys = [(tier, int(t)) for tier, members in zip(tiers, active, strict=True) for t in members]
    pipe = client.pipeline(transaction=False)
    for tier, tenant_id in keys:
        pipe.llen(redis_keys.inbox_key(tier, tenant_id))
        pipe.lindex(redis_keys.inbox_key(tier, tenant_id), 0)
    replies = pipe.execute()
    now = time.time()
    inboxes: dict[int, dict[str, TenantInbox]] = {}
    for index, (tier, tenant_id) in enumerate(keys):
        length, head = replies[2 * index], replies[2 * index + 1]
        if not length or head is None:  # drained between the two reads
            continue
        inboxes.setdefault(tenant_id, {})[tier] = TenantInbox(
            waiting=int(length), lag_seconds=_entry_age(head, now)
        )
    return inboxes


def _entry_age(entry: bytes, now: float) -> float:
    """How long an inbox entry has waited, from the received_at admission wrote in it."""
    try:
        return max(now - float(orjson.loads(entry)["received_at"]), 0.0)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0.0  # not an entry admission wrote: nothing to measure it by


def tenant_backlogs(inboxes: dict[int, dict[str, TenantInbox]]) -> dict[int, dict[str, int]]:
    """Leads waiting per tenant that has any, per tier, from tenant_inboxes()."""
    return {
        tenant_id: {tier: tiers[tier].waiting if tier in tiers else 0 for tier in TIERS}
        for tenant_id, tiers in inboxes.items()
    }


def tenants_laggiest(
    inboxes: dict[int, dict[str, TenantInbox]], limit: int
) -> list[tuple[int, str, TenantInbox]]:
    """The (tenant, tier, inbox) whose oldest lead has waited longest, at most `limit`, from
    tenant_inboxes()."""
    rows = [
        (tenant_id, tier, inbox)
        for tenant_id, tiers in inboxes.items()
        for tier, inbox in tiers.items()
    ]
    rows.sort(key=lambda row: (-row[2].lag_seconds, TIERS.index(row[1]), row[0]))
    return rows[:limit]


def tenant_volumes(tenant_ids: list[int]) -> dict[int, int]:
    """Leads accepted this clock hour plus leads waiting, per tenant: what ranks tenants for
    their metric labels."""
    client = get_inbox_redis()
    hour = int(client.time()[0]) // 3600  # apart: a Redis Cluster's pipeline cannot carry TIME
    pipe = client.pipeline(transaction=False)
    for tenant_id in tenant_ids:
        pipe.hmget(redis_keys.budget_key(tenant_id), ["hour", "used"])
        for tier in TIERS:
            pipe.llen(redis_keys.inbox_key(tier, tenant_id))
    replies = pipe.execute()
    volumes = {}
    for index, tenant_id in enumerate(tenant_ids):
        (budget_hour, used), *lengths = replies[4 * index : 4 + 4 * index]
        accepted = int(used) if budget_hour is not None and int(budget_hour) == hour else 0
        volumes[tenant_id] = accepted + sum(int(n) for n in lengths)
    return volumes


def breaker_names() -> list[str]:
    """Every breaker there can be: the AI provider's, and each webhook tenant's CRM's."""
    webhook_tenants = Tenant.objects.exclude(crm_webhook_url="").values_list("id", flat=True)
    return ["ai", *(f"crm:{tenant_id}" for tenant_id in webhook_tenants.order_by("id"))]


def breaker_states(names: list[str]) -> dict[str, str]:
    """closed, open or half-open, as stored in Redis by pybreaker (leadflow/breakers.py); a
    breaker never used has no state yet and is closed."""
    if not names:
        return {}
    keys = [
        f"{breaker_namespace(name)}:{pybreaker.CircuitRedisStorage.BASE_NAMESPACE}:state"
        for name in names
    ]
    raw = get_redis().mget(keys)
    return {
        name: (value.decode() if value else pybreaker.STATE_CLOSED)
        for name, value in zip(names, raw, strict=True)
    }


def deferred_open() -> dict[tuple[str, str], int]:
    """Open rows of the deferred ledger, per (kind, reason)."""
    rows = (
        DeferredWork.objects.filter(done_at__isnull=True)
        .values("kind", "reason")
        .annotate(n=Count("id"))
    )
    return {(row["kind"], row["reason"]): row["n"] for row in rows}


def dead_letter_counts() -> dict[str, int]:
    """Dead letters open (waiting for a replay) and replayed."""
    return DeadLetter.objects.aggregate(
        open=Count("id", filter=Q(replayed_at__isnull=True)),
        replayed=Count("id", filter=Q(replayed_at__isnull=False)),
    )


def pool_workers() -> dict[str, int]:
    """Workers alive per pool: those that sent a heartbeat lately (workers/metrics.py)."""
    now = time.time()
    pipe = get_redis().pipeline(transaction=False)
    for pool in POOLS:
        pipe.zremrangebyscore(pool_workers_key(pool), "-inf", now - 3600)
        pipe.zcount(pool_workers_key(pool), now - WORKER_STALE_SECONDS, "+inf")
    replies = pipe.execute()
    return {pool: int(replies[2 * index + 1]) for index, pool in enumerate(POOLS)}
