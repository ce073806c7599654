"""The dispatcher driven by hand, with the live control process and pool A stopped so that
nothing else claims, publishes or consumes: fair turns between a big and a small tenant, stale
in-flight batches republished only while pool A has room (oldest first, never for a paused
tier), a paused tier's queue left out of the watermark, and leads in flight counted in the
backlog, the lag, /scaling/backlog, the status page and the control metrics."""

import base64
import time
import uuid

import orjson
import pytest

from apps import inbox
from apps.control.controller import Controller
from apps.control.dispatcher import Dispatcher
from apps.status.metrics import ControlCollector
from apps.status.page import status_context
from leadflow import redis_keys
from leadflow.celery import app
from leadflow.queues import TIERS, pool_queues
from leadflow.redis_conn import get_redis

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def pool_a_stopped(control_stopped):
    """Pool A stopped too: what the dispatcher publishes stays in a.* to be read."""
    control_stopped.kill("pool-a")
    try:
        yield control_stopped
    finally:
        control_stopped.restart("pool-a")


@pytest.fixture
def a_queues_empty(pool_a_stopped, settings):
    """a.* empty before and after (leftovers of earlier tests are dropped: their in-flight
    copies stay, to be republished), and the watermarks and periods of the settings."""
    settings.DISPATCH_WATERMARK_A = 4
    settings.DISPATCH_WATERMARK_BC = 16
    client = get_redis()
    client.delete(*pool_queues("a"))
    for tier in TIERS:  # leads earlier tests left waiting would take the first turns
        for tenant_id in inbox.active_tenants(tier):
            inbox_drop(tenant_id, tier)
    yield
    client.delete(*pool_queues("a"))


def inbox_push(tenant_id: int, tier: str, count: int, received_at: float | None = None) -> None:
    """Leads in a tenant's inbox as admission leaves them (apps/intake/lua/admit.lua)."""
    received_at = received_at or time.time()
    entries = [
        inbox.entry_open(
            {
                "trace_id": str(uuid.uuid4()),
                "tenant_id": tenant_id,
                "received_at": received_at,
                "email": f"{uuid.uuid4().hex[:12]}@example.com",
            }
        )
        + f',"tier":"{tier}"}}'.encode()
        for _ in range(count)
    ]
    client = get_redis()
    for start in range(0, count, 1000):
        client.rpush(redis_keys.inbox_key(tier, tenant_id), *entries[start : start + 1000])
    client.sadd(redis_keys.active_tenants_key(tier), tenant_id)
    client.hincrby(redis_keys.BACKLOG_KEY, tier, count)


def inbox_drop(tenant_id: int, tier: str) -> None:
    """Take what is left in the tenant's inbox out, through the dispatcher's own claim."""
    while batch := inbox.claim_batch(tier, [tenant_id], 500):
        inbox.release_batch(batch.batch_id)


def queued_batches(queue: str) -> list[tuple[str, list[dict]]]:
    """(batch id, entries) of pool A's messages waiting in `queue`, oldest first."""
    batches = []
    for raw in reversed(get_redis().lrange(queue, 0, -1)):
        message = orjson.loads(raw)
        args, _, _ = orjson.loads(base64.b64decode(message["body"]))
        entries, _tier, batch_id = args
        batches.append((batch_id, [orjson.loads(entry) for entry in entries]))
    return batches


def test_a_small_tenant_leaves_within_one_turn_of_a_big_one(make_tenant, a_queues_empty):
    big, _ = make_tenant("big")
    small, _ = make_tenant("small")
    inbox_push(big.id, "normal", 10_000)
    inbox_push(small.id, "normal", 10)
    dispatcher = Dispatcher()
    try:
        dispatcher.dispatch_once()  # up to pool A's watermark: 4 batches
        batches = queued_batches("a.normal")
        assert len(batches) == 4
        tenants = [[entry["tenant_id"] for entry in entries] for _, entries in batches]
        first_big = next(i for i, ids in enumerate(tenants) if big.id in ids)
        with_small = [i for i, ids in enumerate(tenants) if small.id in ids]
        # The small tenant's 10 leave together, in the batch after the big one's first turn.
        assert with_small == [first_big + 1]
        assert tenants[first_big + 1].count(small.id) == 10
        assert all(len(ids) == 500 for ids in tenants)  # the big one fills the rest
    finally:
        for batch_id, _ in queued_batches("a.normal"):
            inbox.release_batch(batch_id)
        inbox_drop(big.id, "normal")
        inbox_drop(small.id, "normal")


def test_stale_batches_go_out_oldest_first_only_while_pool_a_has_room(
    make_tenant, a_queues_empty, settings
):
    settings.INFLIGHT_REPUBLISH_SECONDS = 1.0
    tenant, _ = make_tenant()
    inbox_push(tenant.id, "normal", 60)
    inbox_push(tenant.id, "low", 10)
    claimed = [inbox.claim_batch("normal", [tenant.id], 10) for _ in range(6)]
    low = inbox.claim_batch("low", [tenant.id], 10)
    ids = [batch.batch_id for batch in claimed]
    client = get_redis()
    collector = ControlCollector(controller=Controller())
    republished_before = metric(collector, "leadflow_inflight_republished_batches_total", "normal")
    try:
        time.sleep(1.2)
        dispatcher = Dispatcher()
        # LOW paused: its stale batch stays in flight, and pool A takes four (its watermark).
        assert dispatcher.republish_stale(frozenset({"low"})) == 4
        assert [batch_id for batch_id, _ in queued_batches("a.normal")] == ids[:4]
        assert client.llen("a.low") == 0
        assert dispatcher.republish_stale(frozenset({"low"})) == 0  # a.* is full: they wait
        client.delete("a.normal")  # pool A took them
        assert dispatcher.republish_stale(frozenset({"low"})) == 2  # the two still waiting
        assert [batch_id for batch_id, _ in queued_batches("a.normal")] == ids[4:]
        assert client.exists(redis_keys.inflight_batch_key(low.batch_id))
        republished = metric(collector, "leadflow_inflight_republished_batches_total", "normal")
        assert republished - republished_before == 6
        # Resumed, the LOW batch goes too.
        client.delete("a.normal")
        assert dispatcher.republish_stale(frozenset()) == 1
        assert [batch_id for batch_id, _ in queued_batches("a.low")] == [low.batch_id]
    finally:
        for batch in [*claimed, low]:
            inbox.release_batch(batch.batch_id)


def test_a_paused_tiers_queue_does_not_count_against_the_watermark(make_tenant, a_queues_empty):
    tenant, _ = make_tenant()
    # Five LOW batches queued in a.low when LOW was paused: more than pool A's watermark.
    for _ in range(5):
        app.send_task("pool_a.qualify_leads", args=[[], "low", None], queue="a.low")
    inbox_push(tenant.id, "critical", 3)
    dispatcher = Dispatcher()
    try:
        assert dispatcher.dispatch_once(frozenset({"low"})) == 3
        assert len(queued_batches("a.critical")) == 1
    finally:
        for batch_id, _ in queued_batches("a.critical"):
            inbox.release_batch(batch_id)
        inbox_drop(tenant.id, "critical")


def metric(collector: ControlCollector, name: str, tier: str) -> float:
    for family in collector.collect():
        for sample in family.samples:
            if sample.name == name and sample.labels.get("tier") == tier:
                return sample.value
    return 0.0


def test_leads_in_flight_count_in_backlog_lag_scaling_status_and_metrics(
    make_tenant, a_queues_empty, operator
):
    tenant, _ = make_tenant()
    controller = Controller()
    before = controller.tick({})["normal"]
    inbox_push(tenant.id, "normal", 30, received_at=time.time() - 100)
    batch = inbox.claim_batch("normal", [tenant.id], 500)  # claimed, not stored by pool A
    try:
        measure = controller.tick({})["normal"]
        assert measure.inflight - before.inflight == 30
        assert measure.backlog - before.backlog == 30  # waiting or in flight
        assert measure.lag_seconds >= 100  # the oldest lead in flight

        scaling = operator.get("/scaling/backlog").json()
        assert scaling["a"]["normal"] >= 30

        normal = next(t for t in status_context()["tiers"] if t["tier"] == "normal")
        assert normal["inflight"] - before.inflight == 30
        assert normal["backlog"] - before.backlog == 30
        assert normal["lag"] >= 100

        collector = ControlCollector(controller)
        assert metric(collector, "leadflow_tier_inflight", "normal") - before.inflight == 30
        assert metric(collector, "leadflow_tier_backlog", "normal") - before.backlog == 30
        assert metric(collector, "leadflow_tier_lag_seconds", "normal") >= 100
    finally:
        inbox.release_batch(batch.batch_id)
    inbox.release_batch(batch.batch_id)  # a second release (a redelivered batch) changes nothing
    assert controller.tick({})["normal"].inflight == before.inflight
