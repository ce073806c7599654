"""The dispatcher: moves leads from the inboxes into pool A's queues, keeping every queue shallow.

Tiers go in strict order (critical, normal, low); inside a tier tenants take turns. A batch
holds at most DISPATCH_BATCH_MAX leads: a tenant with that many waiting fills one alone, and
tenants with fewer share one. A batch goes out only while pool A's queues hold fewer than
DISPATCH_WATERMARK_A messages and B's and C's fewer than DISPATCH_WATERMARK_BC, so the backlog
waits in the inboxes, where it can be reordered, counted per tenant, paused or shed.

A batch that is not full goes out at most once per DISPATCH_LINGER_SECONDS of its tier. Each
batch costs pools A, B and C a task each whatever its size (messages, events, transactions):
sent as soon as they arrived, a few hundred leads a second made tasks of one or two leads, and
under overload those tasks took the cores the intake needed (make bench, overload). Lingering
a fraction of a second turns them into a few batches a second; the first lead after a quiet
spell still goes at once, and critical leads linger least.
"""

import logging
import time
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
        self._partial_sent_at: dict[str, float] = {}  # tier -> when a batch not full went
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

    def _batch_due(self, tier: str) -> bool:
        """A full batch is always due; one that is not, once its tier's linger has passed."""
        since = time.monotonic() - self._partial_sent_at.get(tier, float("-inf"))
        if since >= settings.DISPATCH_LINGER_SECONDS[tier]:
            return True
        return inbox.tier_waiting(tier) >= settings.DISPATCH_BATCH_MAX

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
                tenants = self._tenants_in_turn(tier)
                if not tenants:
                    break  # this tier is empty
                if not self._batch_due(tier):
                    return sent  # lingering: its leads, and the tiers below, wait a moment
                batch = inbox.claim_batch(tier, tenants, settings.DISPATCH_BATCH_MAX)
                if batch is None:
                    break
                publish(batch)
                self._last_served[tier] = batch.last_tenant_id
                served = len(batch.entries)
                self.dispatched[tier] += served
                sent += served
                if served < settings.DISPATCH_BATCH_MAX:
                    self._partial_sent_at[tier] = time.monotonic()
                    break  # every tenant of the tier gave what it had
        return sent
