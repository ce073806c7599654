"""Admission and the claim on a Redis Cluster of three masters (tests/doubles/redis_server.py):
every key admit.lua and claim.lua touch shares its shard's hash tag, so each script runs on the
one master of its slot (a key of another slot would be refused: CROSSSLOT). In-process, three
shards spread over the masters; `make test-cluster` runs all of tests/intake on one."""

import uuid

import pytest
import redis
from redis.cluster import RedisCluster

from apps import inbox
from apps.intake import admission
from apps.tenants.cache import TenantAuth
from leadflow import redis_conn, redis_keys
from tests.doubles.redis_server import local_cluster

SHARDS = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with local_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


@pytest.fixture
def on_cluster(cluster, settings, monkeypatch):
    """This process's inboxes are on the cluster, their keys in three shards."""
    settings.REDIS_CLUSTER_URL = cluster.url
    monkeypatch.setattr(redis_keys, "SHARDS", SHARDS)
    admission._tenant_keys.cache_clear()
    client = redis_conn.get_inbox_redis()
    assert isinstance(client, RedisCluster)
    client.flushdb()  # every master
    yield client
    admission._tenant_keys.cache_clear()


def a_tenant(tenant_id: int) -> TenantAuth:
    return TenantAuth(tenant_id, f"t{tenant_id}", 1000, None, 10, 0.0, 1000)


def candidates(tier: str, count: int) -> list[admission.Candidate]:
    return [
        admission.Candidate(uuid.uuid4().hex, tier, {"email": f"{n}@example.com"})
        for n in range(count)
    ]


def test_admission_and_claims_run_on_a_cluster_with_tenants_in_three_shards(on_cluster):
    tenants = [a_tenant(tenant_id) for tenant_id in (30, 31, 32, 33)]  # shards 0, 1, 2, 0
    trace_ids = {}
    for tenant in tenants:
        sent = candidates("normal", 5)
        result = admission.admit(tenant, "127.0.0.1", sent)
        assert result.refusal is None
        assert all(answer.accepted for answer in result.admissions)
        trace_ids[tenant.tenant_id] = [answer.trace_id for answer in result.admissions]
        # A repeat is found (the dedup keys are in the tenant's shard, on its master).
        again = admission.admit(tenant, "127.0.0.1", sent)
        assert [a.trace_id for a in again.admissions if a.duplicate] == trace_ids[tenant.tenant_id]
        critical = admission.admit(tenant, "127.0.0.1", candidates("critical", 2))
        assert [(a.tier, a.demoted) for a in critical.admissions] == [("critical", False)] * 2
    # The tenants' state is on more than one master.
    masters = {
        on_cluster.get_node_from_key(redis_keys.tenant_state_key(t.tenant_id)).port for t in tenants
    }
    assert len(masters) > 1

    # A trace id names its tenant's shard: its status is found from the id alone.
    for tenant_id, ids in trace_ids.items():
        for trace_id in ids:
            assert redis_keys.trace_shard(trace_id) == redis_keys.shard_of(tenant_id)
            queued = admission.queued_lead(trace_id)
            assert queued is not None and queued.tenant_id == tenant_id

    assert admission.queued_lead("not-a-trace-id") is None  # any text: no key, no error

    waiting = inbox.backlog_by_tier()
    assert waiting["normal"].waiting == 20 and waiting["critical"].waiting == 8

    # Claimed shard by shard, critical first; every lead once; released, nothing in flight.
    claimed = []
    for tier in ("critical", "normal"):
        batches = inbox.claim_batches(tier, inbox.active_tenants(tier), 500)
        assert {redis_keys.batch_shard(b.batch_id) for b in batches} == {0, 1, 2}
        claimed += [entry for batch in batches for entry in batch.entries]
        assert inbox.backlog_by_tier()[tier].inflight == (8 if tier == "critical" else 20)
        for batch in batches:
            inbox.release_batch(batch.batch_id)
    leads = inbox.entries_decode(claimed)
    assert len(leads) == len({lead["trace_id"] for lead in leads}) == 28
    after = inbox.backlog_by_tier()
    assert all(b.waiting == 0 and b.inflight == 0 for b in after.values())


def test_a_script_reaching_another_slot_is_refused_on_the_cluster(on_cluster, cluster):
    """What the tags guard against: a master refuses a script whose keys span slots."""
    node = redis.Redis(host="127.0.0.1", port=cluster.ports[0])
    try:
        with pytest.raises(redis.ResponseError, match="same slot"):
            node.eval(
                "return redis.call('GET', KEYS[1])",
                2,
                redis_keys.shard_key(0),
                redis_keys.shard_key(1),
            )
    finally:
        node.close()
