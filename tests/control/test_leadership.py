"""The leader lease and its fencing (apps/control/leadership.py), against the real Redis, on
lease keys of the tests' own (the live stack's control keeps its own): renewed apart from the
loop's work, handed over when the loop stalls, and a former leader's claims, republishes and
published state refused by Redis once another instance holds the lease. The processes' side
(two control processes, one frozen) is tests/outage/test_control_leader.py."""

import logging
import time
import uuid

import orjson
import pytest
import redis

from apps import inbox
from apps.control.controller import Controller
from apps.control.leadership import Leadership, LeadershipLost
from apps.control.models import Policy
from apps.control.outages import Outages, Step
from leadflow import redis_keys
from leadflow.redis_conn import get_redis
from tests.live.api import wait_until


@pytest.fixture
def lease_key():
    key = f"lf:test:leader:{uuid.uuid4().hex}"
    yield key
    get_redis().delete(key)


def test_a_lease_is_renewed_however_long_the_loop_takes(lease_key):
    lease = Leadership(lease_key, seconds=1.5).acquire(wait_seconds=1.0)
    assert lease is not None
    try:
        time.sleep(4.5)  # three leases, with no loop running at all: only the renewals
        assert lease.held()
        assert get_redis().get(lease_key) == lease.token
        assert Leadership(lease_key, seconds=1.5).acquire(wait_seconds=0.5) is None
    finally:
        lease.release()
    assert not get_redis().exists(lease_key)  # released at once, for a standby to take


def test_a_lease_whose_loop_makes_no_progress_is_handed_over(lease_key):
    lease = Leadership(lease_key, seconds=1.5, stall_seconds=2.0).acquire(wait_seconds=1.0)
    wait_until(lambda: not lease.held(), timeout=10, message="a stalled loop kept its lease")
    assert "no progress" in lease.lost_reason
    standby = Leadership(lease_key, seconds=1.5).acquire(wait_seconds=3.0)
    assert standby is not None
    standby.release()
    with pytest.raises(LeadershipLost):
        lease.check()


def fake_entries(count: int) -> list[bytes]:
    return [
        orjson.dumps({"trace_id": str(uuid.uuid4()), "tier": "normal", "received_at": time.time()})
        for _ in range(count)
    ]


def test_a_former_leaders_claims_republishes_and_state_are_refused(lease_key):
    client = get_redis()
    former = Leadership(lease_key, seconds=5.0).acquire(wait_seconds=1.0)
    # Another instance took over while `former` was frozen: the key holds its token now.
    client.set(lease_key, b"the-new-leaders-token", px=5000)
    tenant_id = 10**9 + int(uuid.uuid4().int % 10**6)  # an inbox of this test's own
    key = redis_keys.inbox_key("normal", tenant_id)
    client.rpush(key, *fake_entries(3))
    client.hincrby(redis_keys.BACKLOG_KEY, "normal", 3)  # as admission counts them
    batch = None
    try:
        with pytest.raises(inbox.FenceRefused):
            inbox.claim_batch("normal", [tenant_id], 10, fence=former.fence)
        assert client.llen(key) == 3  # nothing moved

        batch = inbox.claim_batch(
            "normal", [tenant_id], 10, fence=inbox.Fence(lease_key, b"the-new-leaders-token")
        )
        assert batch is not None and len(batch.entries) == 3
        published_at = client.zscore(redis_keys.INFLIGHT_KEY, batch.batch_id)
        with pytest.raises(inbox.FenceRefused):
            inbox.batch_for_republish(batch.batch_id, "normal", fence=former.fence)
        assert client.zscore(redis_keys.INFLIGHT_KEY, batch.batch_id) == published_at

        probe = f"{lease_key}:probe"
        with pytest.raises(LeadershipLost):
            former.transaction(lambda pipe: pipe.set(probe, "written"))
        assert not client.exists(probe)
        assert not former.held()
        with pytest.raises(LeadershipLost):  # the controller's whole tick publication too
            Controller(lease=former).tick({}, policy=Policy())
    finally:
        former.release()
        if batch is not None:
            inbox.release_batch(batch.batch_id)
        client.delete(key)
    assert client.get(lease_key) == b"the-new-leaders-token"  # not released by the former


def test_an_outage_is_logged_once_and_its_end_once(caplog):
    tracker = Outages()
    tick, dispatch = Step("tick", {"Redis"}, tracker), Step("dispatch", {"Redis"}, tracker)

    def refused():
        raise redis.ConnectionError("Connection refused")

    with caplog.at_level(logging.WARNING, logger="apps.control.outages"):
        for _ in range(2):  # the second time, both are backing off: not even tried
            tick.run(refused)
            dispatch.run(refused)
        assert tick.run(lambda: "ticked") is None  # still backing off
        time.sleep(0.3)
        assert tick.run(lambda: "ticked") == "ticked"
        assert tracker.down() == {"Redis"}  # dispatch has not succeeded since
        time.sleep(0.3)
        assert dispatch.run(lambda: 0) == 0
        assert tracker.down() == set()
    messages = [record.getMessage() for record in caplog.records]
    assert sum("Redis unavailable" in m for m in messages) == 1, messages
    assert sum("Redis available again" in m for m in messages) == 1, messages
