"""The dispatcher's batches, with the live control process stopped so that this test's
dispatcher is the only one: tenants with few leads share a batch in turn, a tenant with a
full batch fills it alone, and a batch that is not full waits for its tier's linger."""

import time
import uuid

import orjson
import pytest

from apps import inbox
from apps.control.dispatcher import Dispatcher
from apps.leads.models import Lead
from leadflow import redis_keys
from leadflow.queues import TIERS
from leadflow.redis_conn import get_redis
from tests.live.api import auth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def post_leads(api, key: str, count: int, priority: str = "normal") -> list[str]:
    trace_ids = []
    for _ in range(count):
        lead = {"email": f"{uuid.uuid4().hex[:12]}@example.com", "priority": priority}
        response = api.post("/api/v1/leads", json=lead, headers=auth(key))
        assert response.status_code == 202, response.text
        trace_ids.append(response.json()["trace_id"])
    return trace_ids


def in_flight(batch: inbox.ClaimedBatch) -> list[bytes]:
    return get_redis().lrange(redis_keys.inflight_batch_key(batch.batch_id), 0, -1)


def test_tenants_with_few_leads_share_one_batch_in_turn(api, make_tenant, control_stopped):
    first, first_key = make_tenant()
    second, second_key = make_tenant()
    first_ids = post_leads(api, first_key, 3)
    second_ids = post_leads(api, second_key, 2)

    batch = inbox.claim_batch("normal", [second.id, first.id], max_leads=500)
    try:
        taken = [orjson.loads(entry)["trace_id"] for entry in batch.entries]
        assert taken == second_ids + first_ids  # in the turn given, each tenant's oldest first
        assert batch.last_tenant_id == first.id
        assert in_flight(batch) == batch.entries  # parked until pool A has stored it
        assert inbox.tenant_backlog(first.id)["normal"] == 0
        assert {first.id, second.id}.isdisjoint(inbox.active_tenants("normal"))
    finally:
        inbox.release_batch(batch.batch_id)


def test_a_tenant_with_a_full_batch_fills_it_alone(api, make_tenant, control_stopped):
    first, first_key = make_tenant()
    second, second_key = make_tenant()
    first_ids = post_leads(api, first_key, 3)
    post_leads(api, second_key, 2)

    batch = inbox.claim_batch("normal", [first.id, second.id], max_leads=3)
    try:
        assert [orjson.loads(entry)["trace_id"] for entry in batch.entries] == first_ids
        assert batch.last_tenant_id == first.id
        assert inbox.tenant_backlog(second.id)["normal"] == 2  # its turn comes next
        assert second.id in inbox.active_tenants("normal")
    finally:
        inbox.release_batch(batch.batch_id)
        leftover = inbox.claim_batch("normal", [second.id], max_leads=500)
        inbox.release_batch(leftover.batch_id)


def inboxes_empty() -> bool:
    return not any(inbox.active_tenants(tier) for tier in TIERS)


def test_a_batch_that_is_not_full_waits_for_its_tiers_linger(
    api, make_tenant, control_stopped, settings
):
    # Leads that earlier tests left waiting (their control process was stopped) go first, so
    # that this test's dispatcher counts only its own.
    settings.DISPATCH_LINGER_SECONDS = dict.fromkeys(TIERS, 0.0)
    leftovers = Dispatcher()
    wait_until(
        lambda: leftovers.dispatch_once() == 0 and inboxes_empty(),
        timeout=30,
        message="the inboxes did not empty",
    )
    settings.DISPATCH_LINGER_SECONDS = {"critical": 0.0, "normal": 2.0, "low": 0.0}
    _, key = make_tenant()
    dispatcher = Dispatcher()

    # After a quiet spell the first lead goes at once.
    sent_at_once = post_leads(api, key, 1)
    assert dispatcher.dispatch_once() == 1

    # The next ones wait out the normal tier's linger, and LOW waits behind them (strict order);
    # critical does not linger.
    lingering = post_leads(api, key, 2) + post_leads(api, key, 1, priority="low")
    critical = post_leads(api, key, 1, priority="critical")
    assert dispatcher.dispatch_once() == 1
    assert dispatcher.dispatched == {"normal": 1, "critical": 1}

    time.sleep(2.1)
    assert dispatcher.dispatch_once() == 3  # two normal in one batch, then the LOW one
    assert dispatcher.dispatched == {"normal": 3, "critical": 1, "low": 1}

    # Pool A stores them all (the batches went to the live pools).
    every_lead = sent_at_once + lingering + critical
    wait_until(
        lambda: Lead.objects.filter(trace_id__in=every_lead).count() == len(every_lead),
        timeout=30,
        message="the dispatched leads were not all stored",
    )
