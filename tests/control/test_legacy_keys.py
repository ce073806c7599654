"""An upgrade from the key layout before shards: the leads waiting in the old inboxes and the
old in-flight batches are moved into their shards' keys (apps/inbox legacy_keys_move, run by
the controller every tick), so none is stranded."""

import time
import uuid

import orjson

from apps import inbox
from leadflow import redis_keys
from leadflow.redis_conn import get_inbox_redis

TENANT = 987_654


def entry(tier: str, received_at: float) -> bytes:
    fields = {"trace_id": str(uuid.uuid4()), "tenant_id": TENANT, "tier": tier}
    return orjson.dumps({**fields, "received_at": received_at})


def test_old_inboxes_and_inflight_batches_move_to_their_shard_and_are_claimed_in_order(
    control_stopped,
):
    client = get_inbox_redis()
    now = time.time()
    old = [entry("normal", now - 60 + n) for n in range(3)]
    # What the older version held: an inbox, its active set and counter, one in-flight batch.
    client.rpush(f"lf:inbox:normal:{TENANT}", *old)
    client.sadd("lf:active:normal", TENANT)
    client.hincrby("lf:backlog", "normal", 3)
    batch_id = f"normal-{uuid.uuid4().hex}"
    in_flight = [entry("normal", now - 120)]
    client.rpush(f"lf:inflight:{batch_id}", *in_flight)
    client.zadd("lf:inflight", {batch_id: now - 100})
    client.zadd("lf:inflight-since:normal", {batch_id: now - 120})
    client.hincrby("lf:inflight-leads", "normal", 1)
    # A lead the new version admitted meanwhile: it waits behind the older ones.
    newer = entry("normal", now)
    client.rpush(redis_keys.inbox_key("normal", TENANT), newer)
    client.sadd(redis_keys.active_tenants_key("normal", redis_keys.shard_of(TENANT)), TENANT)
    client.hincrby(redis_keys.shard_key(redis_keys.shard_of(TENANT)), "normal", 1)
    before = inbox.backlog_by_tier()["normal"]
    try:
        assert inbox.legacy_keys_move() == 4
        assert inbox.legacy_keys_move() == 0  # once
        assert not client.exists(f"lf:inbox:normal:{TENANT}", f"lf:inflight:{batch_id}")
        assert not client.sismember("lf:active:normal", TENANT)
        after = inbox.backlog_by_tier()["normal"]
        assert (after.waiting, after.inflight) == (before.waiting + 3, before.inflight + 1)
        assert after.oldest_received_at <= now - 120

        # The stale batch is found and released where it is now.
        assert batch_id in inbox.stale_batch_ids(50)["normal"]
        inbox.release_batch(batch_id)
        assert inbox.backlog_by_tier()["normal"].inflight == before.inflight

        claimed = inbox.claim_batch("normal", [TENANT], 10)
        assert claimed.entries == [*old, newer]
        inbox.release_batch(claimed.batch_id)
    finally:
        client.delete(redis_keys.inbox_key("normal", TENANT))
        client.srem(redis_keys.active_tenants_key("normal", redis_keys.shard_of(TENANT)), TENANT)
