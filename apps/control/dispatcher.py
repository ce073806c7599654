"""The dispatcher: moves leads from the inboxes into pool A's queues, keeping every queue shallow.

Tiers go in strict order (critical, normal, low); inside a tier tenants take turns, a batch
of at most DISPATCH_BATCH_MAX each. A batch goes out only while pool A's queues hold fewer
than DISPATCH_WATERMARK_A messages and B's and C's fewer than DISPATCH_WATERMARK_BC, so the
backlog waits in the inboxes, where it can be reordered, counted per tenant, paused or shed.
"""

import logging
from collections import Counter

from django.conf import settings

from apps.intake import inbox
from leadflow.redis_conn import get_redis
from workers.pool_a import qualify_leads
from workers.queues import POOLS, TIERS, pool_queues, queue_name

log = logging.getLogger(__name__)


def queue_lengths() -> dict[str, int]:
    """Messages waiting in each Celery queue, by name (not counting those a worker holds)."""
    names = [name for pool in POOLS for name in pool_queues(pool)]
    pipe = get_redis().pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    return dict(zip(names, pipe.execute(), strict=True))


def queue_depths() -> dict[str, int]:
    """Messages waiting in each pool's Celery queues."""
    lengths = queue_lengths()
    return {pool: sum(lengths[q] for q in pool_queues(pool)) for pool in POOLS}


def pools_have_room() -> bool:
    depths = queue_depths()
    return (
        depths["a"] < settings.DISPATCH_WATERMARK_A
        and depths["b"] < settings.DISPATCH_WATERMARK_BC
        and depths["c"] < settings.DISPATCH_WATERMARK_BC
    )


def publish(batch: inbox.ClaimedBatch) -> None:
    """Hand the batch to pool A. Its in-flight copy stays until pool A has stored it."""
    entries = [entry.decode() for entry in batch.entries]
    qualify_leads.apply_async(
        args=[entries, batch.tier, batch.batch_id], queue=queue_name("a", batch.tier)
    )


class Dispatcher:
    def __init__(self) -> None:
        self._last_served: dict[str, int] = {}  # tier -> tenant served last, for round robin
        self.dispatched = Counter()  # tier -> leads sent to pool A since start

    def republish_stale(self) -> int:
        """Batches claimed long ago and still not stored: the dispatcher died before publishing,
        or the message was lost between the broker and pool A (kombu's Redis transport pops a
        message before it records it as unacked, so a worker killed in between drops it)."""
        batches = inbox.stale_batches(settings.INFLIGHT_REPUBLISH_SECONDS)
        for batch in batches:
            log.warning(
                "republishing in-flight batch %s (%d leads)", batch.batch_id, len(batch.entries)
            )
            publish(batch)
        return len(batches)

    def _tenants_in_turn(self, tier: str) -> list[int]:
        tenants = inbox.active_tenants(tier)
        last = self._last_served.get(tier)
        if last is None:
            return tenants
        after = [t for t in tenants if t > last]
        return after + [t for t in tenants if t <= last]

    def dispatch_once(self, paused_tiers: frozenset[str] = frozenset()) -> int:
        """One pass: fill the pools' queues up to their watermarks. Returns leads dispatched.

        A paused tier (LOW under overload) is left waiting in its inboxes."""
        sent = 0
        for tier in TIERS:
            if tier in paused_tiers:
                continue
            # Strict order: a lower tier is served only once this one has nothing left.
            while True:
                if not pools_have_room():
                    return sent  # this tier may still wait, and the tiers below it with it
                served = self._serve_round(tier)
                self.dispatched[tier] += served
                sent += served
                if not served:
                    break  # this tier is empty
        return sent

    def _serve_round(self, tier: str) -> int:
        """One batch for each tenant waiting in the tier, in turn, while the pools have room."""
        served = 0
        for tenant_id in self._tenants_in_turn(tier):
            if served and not pools_have_room():
                break
            batch = inbox.claim_batch(tier, tenant_id, settings.DISPATCH_BATCH_MAX)
            self._last_served[tier] = tenant_id
            if batch is not None:
                publish(batch)
                served += len(batch.entries)
        return served
