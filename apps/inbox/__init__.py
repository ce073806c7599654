"""The inbox: the absorber's Redis state between the intake and the control loop, per (tier,
tenant) inboxes, the backlog counters, in-flight batches, and the scripts that move leads
through them (lua/: claim, release, republish).

Its key names are leadflow/redis_keys.py's. Admission pushes (apps/intake/admission.py); the
dispatcher claims (claim_batches) into in-flight batches, and pool A releases each once stored
(release_batch). Leads in flight are counted per tier as they are claimed and released, in
the same scripts, so the controller reads them in O(1) each tick.

The keys are in shards (one Redis Cluster hash tag each, redis_keys.SHARDS): a claim takes one
shard's tenants into a batch of that shard, and the readers here sum the shards' counters.
"""

import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from leadflow import redis_keys
from leadflow.queues import TIERS
from leadflow.redis_conn import cluster_enabled, get_inbox_redis, lua_script
from leadflow.redis_keys import (
    active_tenants_key,
    batch_shard,
    inbox_key,
    inflight_batch_key,
    inflight_key,
    inflight_since_key,
    shard_key,
    shard_of,
    shards,
)

log = logging.getLogger(__name__)

_LUA = Path(__file__).parent / "lua"


def entry_open(fields: dict) -> bytes:
    """An inbox entry (JSON) without its closing brace: admission appends the tier it decides
    (and "demoted") inside the script. entries_decode reads the completed entry."""
    return orjson.dumps(fields)[:-1]


@dataclass(frozen=True, slots=True)
class Fence:
    """The control leader's lease key and the token of the term its caller holds: a fenced
    script acts only while the key still holds that token (apps/control/leadership.py)."""

    key: str
    token: bytes


class FenceRefused(Exception):
    """The caller's lease is over: another control instance leads, and Redis refused the step."""


def _fence_args(fence: Fence | None, shard: int) -> tuple[str, bytes]:
    """The fence a script of `shard` checks. With the inboxes on a Redis Cluster the lease key
    is not where the script runs (it stays on REDIS_URL): the scripts are unfenced, and rely
    on the leader's own check of its lease before each step (apps/control/leadership.py)."""
    if fence is None or cluster_enabled():
        # Unfenced: the script reads no key, but its place holds one of the shard's slot.
        return shard_key(shard), b""
    return fence.key, fence.token


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    batch_id: str
    tier: str
    entries: list[bytes]
    # The last tenant that gave leads: the dispatcher's round robin resumes after it.
    last_tenant_id: int | None = None


def claim_batch(
    tier: str, tenant_ids: list[int], max_leads: int, fence: Fence | None = None
) -> ClaimedBatch | None:
    """Take up to max_leads of the tier from the shard of the first tenant given: its tenants'
    inboxes in the order given (oldest first in each), as one in-flight batch of that shard;
    None when they were all empty (claim.lua). With a fence, raises FenceRefused (and claims
    nothing) once the caller's lease is over."""
    shard = shard_of(tenant_ids[0])
    tenants = [tenant_id for tenant_id in tenant_ids if shard_of(tenant_id) == shard]
    batch_id = redis_keys.batch_id_new(tier, shard, uuid.uuid4().hex)
    fence_key, token = _fence_args(fence, shard)
    claimed = lua_script(_LUA / "claim.lua", inbox=True)(
        keys=[
            active_tenants_key(tier, shard),
            shard_key(shard),
            inflight_key(shard),
            inflight_batch_key(batch_id),
            inflight_since_key(tier, shard),
            fence_key,
            *(inbox_key(tier, tenant_id) for tenant_id in tenants),
        ],
        args=[max_leads, tier, batch_id, time.time(), token, *tenants],
    )
    if claimed == -1:
        raise FenceRefused(f"claim of a {tier} batch refused: another control instance leads")
    if not claimed:
        return None
    last_tenant, entries = claimed
    return ClaimedBatch(batch_id, tier, entries, last_tenant_id=int(last_tenant))


def claim_batches(
    tier: str, tenant_ids: list[int], max_leads: int, fence: Fence | None = None
) -> list[ClaimedBatch]:
    """Up to max_leads of the tier in all, shard by shard (in the order their tenants first
    appear in tenant_ids): one batch per shard that gave leads. With one shard, claim_batch."""
    batches = []
    room = max_leads
    remaining = list(tenant_ids)
    while remaining and room > 0:
        batch = claim_batch(tier, remaining, room, fence)
        shard = shard_of(remaining[0])
        remaining = [tenant_id for tenant_id in remaining if shard_of(tenant_id) != shard]
        if batch is not None:
            batches.append(batch)
            room -= len(batch.entries)
    return batches


def tier_waiting(tier: str) -> int:
    """Leads waiting in the tier's inboxes, in every shard."""
    pipe = get_inbox_redis().pipeline(transaction=False)
    for shard in shards():
        pipe.hget(shard_key(shard), tier)
    return sum(int(count or 0) for count in pipe.execute())


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
    """Pool A has stored the batch in PostgreSQL: forget the in-flight copy, and uncount its
    leads (once: a redelivered batch released again changes nothing; release.lua)."""
    shard = batch_shard(batch_id)
    lua_script(_LUA / "release.lua", inbox=True)(
        keys=[
            inflight_batch_key(batch_id),
            inflight_key(shard),
            shard_key(shard),
            *(inflight_since_key(tier, shard) for tier in TIERS),
        ],
        args=[batch_id, *TIERS],
    )


def batch_tier(batch_id: str) -> str | None:
    """The tier a batch id names; None for an id from before ids carried it."""
    tier, sep, _ = batch_id.partition("-")
    return tier if sep and tier in TIERS else None


def stale_batch_ids(older_than_seconds: float) -> dict[str, list[str]]:
    """Per tier, the in-flight batches published (claimed or republished) longer ago than
    that and never released, the longest waiting first (in each shard)."""
    client = get_inbox_redis()
    cutoff = time.time() - older_than_seconds
    stale: dict[str, list[str]] = {tier: [] for tier in TIERS}
    for shard in shards():
        published = inflight_key(shard)
        ids = [raw.decode() for raw in client.zrangebyscore(published, "-inf", cutoff)]
        unnamed = [batch_id for batch_id in ids if batch_tier(batch_id) is None]
        pipe = client.pipeline(transaction=False)
        for batch_id in unnamed:
            pipe.lindex(inflight_batch_key(batch_id), 0)
        heads = dict(zip(unnamed, pipe.execute(), strict=True)) if unnamed else {}
        for batch_id in ids:
            tier = batch_tier(batch_id)
            if tier is None:
                head = heads[batch_id]
                if head is None:  # released meanwhile, or an empty leftover
                    client.zrem(published, batch_id)
                    continue
                tier = orjson.loads(head)["tier"]
            stale[tier].append(batch_id)
    return stale


def batch_for_republish(
    batch_id: str, tier: str, fence: Fence | None = None
) -> ClaimedBatch | None:
    """The in-flight batch's entries, stamped as published now (so it is stale again only
    after another full period); None when pool A released it meanwhile (republish.lua).
    With a fence, raises FenceRefused (and stamps nothing) once the caller's lease is over."""
    shard = batch_shard(batch_id)
    fence_key, token = _fence_args(fence, shard)
    entries = lua_script(_LUA / "republish.lua", inbox=True)(
        keys=[fence_key, inflight_batch_key(batch_id), inflight_key(shard)],
        args=[token, batch_id, time.time()],
    )
    if entries == -1:
        raise FenceRefused(f"republish of batch {batch_id} refused: another control instance leads")
    if not entries:
        release_batch(batch_id)  # its copy is gone: it must not hold its tier's lag either
        return None
    return ClaimedBatch(batch_id, tier, entries)


def active_tenants(tier: str) -> list[int]:
    """The tenants with leads waiting in the tier, in every shard."""
    pipe = get_inbox_redis().pipeline(transaction=False)
    for shard in shards():
        pipe.smembers(active_tenants_key(tier, shard))
    return sorted(int(t) for members in pipe.execute() for t in members)


@dataclass(frozen=True, slots=True)
class TierBacklog:
    tier: str
    waiting: int  # leads in the inboxes
    inflight: int  # leads claimed by the dispatcher, not yet stored by pool A
    oldest_received_at: float | None  # epoch seconds of the oldest lead waiting or in flight
    # Per shard, the leads waiting (the controller gives each shard the others' sum).
    waiting_by_shard: tuple[int, ...] = ()


def backlog_by_tier() -> dict[str, TierBacklog]:
    """Leads waiting and in flight, and the oldest of them, per tier, summed over the shards:
    the counters, the heads of the inboxes and the in-flight batches' oldest lead (two round
    trips, whatever the number of leads; one command per tenant with leads waiting)."""
    client = get_inbox_redis()
    fields = [*TIERS, *(f"inflight:{tier}" for tier in TIERS)]
    pipe = client.pipeline(transaction=False)
    for shard in shards():
        pipe.hmget(shard_key(shard), fields)
        for tier in TIERS:
            pipe.smembers(active_tenants_key(tier, shard))
            pipe.zrange(inflight_since_key(tier, shard), 0, 0, withscores=True)
    replies = pipe.execute()
    per_shard = [replies[i : i + 7] for i in range(0, len(replies), 7)]
    pipe = client.pipeline(transaction=False)
    for _counters, *per_tier in per_shard:
        for index, tier in enumerate(TIERS):
            for tenant in per_tier[2 * index]:
                pipe.lindex(inbox_key(tier, tenant.decode()), 0)
    heads = iter(pipe.execute())
    oldest: dict[str, list[float]] = {tier: [] for tier in TIERS}
    waiting: dict[str, list[int]] = {tier: [] for tier in TIERS}
    inflight = dict.fromkeys(TIERS, 0)
    for counters, *per_tier in per_shard:
        for index, tier in enumerate(TIERS):
            tenants, oldest_inflight = per_tier[2 * index], per_tier[2 * index + 1]
            oldest[tier] += [
                orjson.loads(h)["received_at"] for h in (next(heads) for _ in tenants) if h
            ]
            oldest[tier] += [score for _, score in oldest_inflight]
            waiting[tier].append(int(counters[index] or 0))
            inflight[tier] += max(int(counters[len(TIERS) + index] or 0), 0)
    return {
        tier: TierBacklog(
            tier=tier,
            waiting=sum(waiting[tier]),
            inflight=inflight[tier],
            oldest_received_at=min(oldest[tier]) if oldest[tier] else None,
            waiting_by_shard=tuple(waiting[tier]),
        )
        for tier in TIERS
    }


def tenant_backlog(tenant_id: int) -> dict[str, int]:
    pipe = get_inbox_redis().pipeline(transaction=False)
    for tier in TIERS:
        pipe.llen(inbox_key(tier, tenant_id))
    return dict(zip(TIERS, pipe.execute(), strict=True))


# The key layout before shards (no hash tags): what a running platform held when it was
# upgraded, or what an API process of the older version still writes during a rolling deploy.
_LEGACY_ACTIVE = "lf:active:{tier}"
_LEGACY_INBOX = "lf:inbox:{tier}:{tenant}"
_LEGACY_BACKLOG = "lf:backlog"
_LEGACY_INFLIGHT = "lf:inflight"
_LEGACY_INFLIGHT_BATCH = "lf:inflight:{batch_id}"
_LEGACY_INFLIGHT_SINCE = "lf:inflight-since:{tier}"
_LEGACY_INFLIGHT_LEADS = "lf:inflight-leads"


def legacy_keys_move() -> int:
    """Move the leads the layout before shards holds (inboxes, in-flight batches) into their
    shards' keys, so none is stranded by the upgrade; the controller calls it every tick
    (a few reads when there is nothing to move). Not on a Redis Cluster, which never held the
    old layout. Returns the leads moved."""
    if cluster_enabled():
        return 0
    client = get_inbox_redis()
    pipe = client.pipeline(transaction=False)
    for tier in TIERS:
        pipe.smembers(_LEGACY_ACTIVE.format(tier=tier))
    pipe.zrange(_LEGACY_INFLIGHT, 0, -1)
    *active, batch_ids = pipe.execute()
    moved = 0
    for tier, tenants in zip(TIERS, active, strict=True):
        for raw in tenants:
            tenant = raw.decode()
            moved += lua_script(_LUA / "legacy_inbox.lua", inbox=True)(
                keys=[
                    _LEGACY_INBOX.format(tier=tier, tenant=tenant),
                    inbox_key(tier, tenant),
                    _LEGACY_ACTIVE.format(tier=tier),
                    active_tenants_key(tier, shard_of(tenant)),
                    _LEGACY_BACKLOG,
                    shard_key(shard_of(tenant)),
                ],
                args=[tenant, tier],
            )
    for raw in batch_ids:
        batch_id = raw.decode()
        tier = batch_tier(batch_id)
        if tier is None:  # ids from before ids named their tier: its first entry says it
            head = client.lindex(_LEGACY_INFLIGHT_BATCH.format(batch_id=batch_id), 0)
            tier = orjson.loads(head)["tier"] if head else TIERS[0]
        moved += lua_script(_LUA / "legacy_inflight.lua", inbox=True)(
            keys=[
                _LEGACY_INFLIGHT,
                _LEGACY_INFLIGHT_BATCH.format(batch_id=batch_id),
                _LEGACY_INFLIGHT_SINCE.format(tier=tier),
                _LEGACY_INFLIGHT_LEADS,
                inflight_key(0),
                inflight_batch_key(batch_id),
                inflight_since_key(tier, 0),
                shard_key(0),
            ],
            args=[batch_id, tier],
        )
    if moved:
        log.warning("moved %d leads from the key layout before shards", moved)
    return moved
