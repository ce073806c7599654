"""The dispatcher: moves leads from the inboxes into pool A's queues, keeping every queue shallow.

Tiers go in strict order (critical, normal, low); inside a tier tenants take turns. A batch
holds at most DISPATCH_BATCH_MAX leads: a tenant with that many waiting fills one alone, and
tenants with fewer share one. A batch goes out only while pool A's queues hold fewer than
DISPATCH_WATERMARK_A messages and B's and C's fewer than DISPATCH_WATERMARK_BC, so the backlog
waits in the inboxes, where it can be reordered, counted per tenant, paused or shed; in NORMAL
mode B and C may hold up to DISPATCH_AHEAD_BC (pools_have_room_to_dispatch says why).

A paused tier's queues are left out of the watermark: what they hold waits there, and it
never holds back another tier (critical included).

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

from apps import inbox
from apps.control.models import Mode
from apps.control.state import shedding_current
from leadflow import handoff
from leadflow.queues import POOLS, TIERS, pool_queues, queue_name
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import INFLIGHT_REPUBLISHED_KEY

log = logging.getLogger(__name__)


def queue_lengths() -> dict[str, int]:
    """Messages waiting in each Celery queue, by name (not counting those a worker holds)."""
    names = [name for pool in POOLS for name in pool_queues(pool)]
    pipe = get_redis().pipeline(transaction=False)
    for name in names:
        pipe.llen(name)
    return dict(zip(names, pipe.execute(), strict=True))


def queue_depths(paused_tiers: frozenset[str] = frozenset()) -> dict[str, int]:
    """Messages waiting in each pool's Celery queues, but for the paused tiers' queues."""
    lengths = queue_lengths()
    return {
        pool: sum(lengths[queue_name(pool, tier)] for tier in TIERS if tier not in paused_tiers)
        for pool in POOLS
    }


def pools_have_room(paused_tiers: frozenset[str] = frozenset(), *, ahead: bool = False) -> bool:
    """Every pool's queues under their watermark. A paused tier's queues do not count: its
    consumers are cancelled, so what they hold does not drain until the pause ends.

    ahead: pool A may run ahead of B and C, up to DISPATCH_AHEAD_BC messages in b.* or c.*,
    while the platform is in NORMAL mode (see pools_have_room_to_dispatch)."""
    depths = queue_depths(paused_tiers)
    bc = settings.DISPATCH_AHEAD_BC if ahead else settings.DISPATCH_WATERMARK_BC
    return depths["a"] < settings.DISPATCH_WATERMARK_A and depths["b"] < bc and depths["c"] < bc


def pools_have_room_to_dispatch(paused_tiers: frozenset[str] = frozenset()) -> bool:
    """Room for one more batch to pool A. In NORMAL mode pool A is not held back by B's and
    C's queues until they hold DISPATCH_AHEAD_BC messages: qualification runs ahead and B and C
    work through what it left them at their own pace, instead of A idling at every step of
    theirs. Out of NORMAL (THIN, SEVERE, EMERGENCY: the platform is overloaded) B and C keep
    the tight watermark again, so the backlog waits in the inboxes, where it can be shed,
    sampled, paused and reordered. The controller measures lag and drain in the inboxes only:
    the bounded run-ahead is what it does not see (a few seconds of B's and C's work), and
    once B and C fall that far behind, pool A is held, the inboxes' lag grows and the mode
    machine reacts as before."""
    return pools_have_room(paused_tiers, ahead=shedding_current().mode == Mode.NORMAL)


def inflight_republished_count(tier: str) -> None:
    """Counted in Redis, so the total survives a restart or a new leader (the control
    metrics read it: leadflow_inflight_republished_batches_total)."""
    get_redis().hincrby(INFLIGHT_REPUBLISHED_KEY, tier, 1)


def inflight_republished() -> dict[str, int]:
    raw = get_redis().hgetall(INFLIGHT_REPUBLISHED_KEY)
    return {tier: int(raw.get(tier.encode(), 0)) for tier in TIERS}


def publish(batch: inbox.ClaimedBatch) -> None:
    """Hand the batch to pool A. Its in-flight copy stays until pool A has stored it."""
    handoff.send_to_qualify([entry.decode() for entry in batch.entries], batch.tier, batch.batch_id)


class Dispatcher:
    """In run_control, `fence` is the leader's: a claim or republish by an instance whose lease
    is over is refused by Redis (inbox.FenceRefused), so it moves nothing."""

    def __init__(self, fence: inbox.Fence | None = None) -> None:
        self._fence = fence
        # Batches claimed (in flight) whose publication the broker refused: sent first next
        # time, rather than left waiting in flight for the republish period.
        self._unpublished: list[inbox.ClaimedBatch] = []
        self._last_served: dict[str, int] = {}  # tier -> tenant served last, for round robin
        self._partial_sent_at: dict[str, float] = {}  # tier -> when a batch not full went
        self.dispatched = Counter()  # tier -> leads sent to pool A since start

    def republish_stale(self, paused_tiers: frozenset[str] = frozenset()) -> int:
        """Publish again batches claimed long ago and still not stored: the dispatcher died
        before publishing, or the message was lost between the broker and pool A (kombu's
        Redis transport pops a message before it records it as unacked, so a worker killed in
        between drops it). Returns how many.

        Like new batches, they go only while the pools have room (tiers in order, the longest
        waiting first), so a backlog that piled up in flight (pool A down, say) comes back at
        the pace pool A takes it, not all at once. A paused tier's batches stay in flight,
        counted there, until it resumes."""
        sent = 0
        for tier, batch_ids in inbox.stale_batch_ids(settings.INFLIGHT_REPUBLISH_SECONDS).items():
            if tier in paused_tiers:
                continue
            for batch_id in batch_ids:
                if not pools_have_room_to_dispatch(paused_tiers):
                    return sent
                batch = inbox.batch_for_republish(batch_id, tier, self._fence)
                if batch is None:
                    continue  # stored meanwhile
                log.warning(
                    "republishing in-flight batch %s (%d leads)", batch_id, len(batch.entries)
                )
                self._send(batch, paused_tiers)
                inflight_republished_count(tier)
                sent += 1
        return sent

    def _send(self, batch: inbox.ClaimedBatch, paused_tiers: frozenset[str]) -> None:
        if all(pending.batch_id != batch.batch_id for pending in self._unpublished):
            self._unpublished.append(batch)
        self._send_pending(paused_tiers)

    def _send_pending(self, paused_tiers: frozenset[str]) -> None:
        """Publish the batches claimed and not yet published, oldest first; a failure leaves
        them (and raises)."""
        for batch in list(self._unpublished):
            if batch.tier not in paused_tiers:
                publish(batch)
                self._unpublished.remove(batch)

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
        self._send_pending(paused_tiers)
        sent = 0
        for tier in TIERS:
            if tier in paused_tiers:
                continue
            # Strict order: a lower tier is served only once this one has nothing left.
            while True:
                if not pools_have_room_to_dispatch(paused_tiers):
                    return sent  # this tier may still wait, and the tiers below it with it
                tenants = self._tenants_in_turn(tier)
                if not tenants:
                    break  # this tier is empty
                if not self._batch_due(tier):
                    return sent  # lingering: its leads, and the tiers below, wait a moment
                # Shard by shard (one batch each), up to a batch's worth of leads in all.
                batches = inbox.claim_batches(
                    tier, tenants, settings.DISPATCH_BATCH_MAX, fence=self._fence
                )
                if not batches:
                    break
                served = 0
                for batch in batches:
                    self._last_served[tier] = batch.last_tenant_id
                    served += len(batch.entries)
                    self.dispatched[tier] += len(batch.entries)
                    # All of them pending first: a refused publication leaves none behind.
                    self._unpublished.append(batch)
                self._send_pending(paused_tiers)
                sent += served
                if served < settings.DISPATCH_BATCH_MAX:
                    self._partial_sent_at[tier] = time.monotonic()
                    break  # every tenant of the tier, in every shard, gave what it had
        return sent
