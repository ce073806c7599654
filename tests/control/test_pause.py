"""A pause is a pause: while LOW is paused, nothing is sent to the *.low queues — not by the
stalled-lead sweeper, the in-flight republisher, the backfill, a dead-letter replay or pool A's
hand-off — what waits for LOW waits in its inbox, in flight or in the deferred ledger, counted
there, and the paused tier never blocks another (the watermark leaves paused queues out)."""

import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps import inbox
from apps.control.backfill import report_sender
from apps.control.models import DeferredKind, DeferredReason, DeferredWork, Mode, Policy
from apps.control.modes import Shedding
from apps.control.routing import leads_route
from apps.control.state import shedding_current
from apps.crm.dead_letters import dead_letters_replay
from apps.crm.models import DeadLetter
from apps.leads.models import Lead, LeadStatus
from apps.reports.services import reports_schedule
from leadflow import redis_keys
from leadflow.celery import app
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import CONTROL_STATE_KEY, REPORTS_LAST_PERIOD_KEY
from tests.factories import lead_make
from tests.live.api import auth, wait_until
from tests.ops.scrape import scrape

pytestmark = pytest.mark.django_db(transaction=True)

LOW_QUEUES = ("a.low", "b.low", "c.low")


def low_queue_lengths() -> dict[str, int]:
    client = get_redis()
    return {name: client.llen(name) for name in LOW_QUEUES}


def stored_lead(tenant, tier: str, *, qualified: bool, age: timedelta, **fields) -> str:
    """A lead as pool A stores it, `age` ago; its trace id."""
    at = timezone.now() - age
    lead = lead_make(
        tenant,
        tier=tier,
        email=f"{uuid.uuid4().hex[:10]}@{'acme.com' if qualified else 'gmail.com'}",
        status=fields.pop("status", LeadStatus.QUALIFIED),
        score=70 if qualified else 20,
        is_qualified=qualified,
        received_at=at,
        qualified_at=at,
        **fields,
    )
    return str(lead.trace_id)


def post_leads(api, key: str, count: int, priority: str) -> list[str]:
    body = {"leads": [{"email": f"{uuid.uuid4().hex[:12]}@example.com"} for _ in range(count)]}
    for lead in body["leads"]:
        lead["priority"] = priority
    response = api.post("/api/v1/leads/batch", json=body, headers=auth(key))
    assert response.status_code == 202, response.text
    return [answer["trace_id"] for answer in response.json()["results"]]


def low_consumers() -> dict[str, bool]:
    """Per pool worker: whether it consumes its *.low queue now."""
    replies = app.control.inspect(timeout=1.0).active_queues() or {}
    return {
        worker: any(q["name"].endswith(".low") for q in queues)
        for worker, queues in replies.items()
        if worker.startswith("pool-")
    }


def low_published(paused: bool) -> bool:
    return get_redis().hget(CONTROL_STATE_KEY, "low_paused") == str(paused).encode()


@pytest.fixture
def low_paused(live_stack):
    """LOW paused by the operators' switch, its consumers cancelled; resumed after the test."""
    policy = Policy.current()

    def resume() -> None:
        Policy.objects.filter(pk=policy.pk).update(pause_low=False, updated_by="test")
        wait_until(lambda: low_published(False), timeout=10, message="LOW still paused")
        wait_until(
            lambda: (consumers := low_consumers()) and all(consumers.values()),
            timeout=15,
            message=f"*.low consumers not back: {low_consumers()}",
        )

    Policy.objects.filter(pk=policy.pk).update(pause_low=True, updated_by="test")
    try:
        wait_until(lambda: low_published(True), timeout=10, message="LOW not paused")
        wait_until(
            lambda: (consumers := low_consumers()) and not any(consumers.values()),
            timeout=15,
            message=f"*.low consumers still on: {low_consumers()}",
        )
        yield resume
    finally:
        resume()


def control_metrics(live_stack):
    return scrape(f"http://127.0.0.1:{live_stack.env['LEADFLOW_CONTROL_METRICS_PORT']}/metrics")


def test_a_paused_low_tier_receives_nothing_blocks_nothing_and_resumes(
    api, make_tenant, live_stack, low_paused
):
    tenant, key = make_tenant()
    hour_ago = timedelta(hours=1)
    # LOW messages queued when the pause began: 20 for pool C, more than its watermark (16).
    queued = [stored_lead(tenant, "low", qualified=False, age=hour_ago) for _ in range(20)]
    for trace_id in queued:
        app.send_task("pool_c.sync_leads", args=[[trace_id], "low"], queue="c.low")
    # Stored LOW leads whose messages to B and C were lost: a sweep finds them stalled.
    stalled = [stored_lead(tenant, "low", qualified=q, age=hour_ago) for q in (True, False)]
    # LOW leads wait in their inbox; 40 of them in four batches claimed and never stored (the
    # republisher sends those again once they are stale).
    in_inbox = post_leads(api, key, 50, "low")
    claimed = [inbox.claim_batch("low", [tenant.id], 10) for _ in range(4)]
    claimed_at = time.monotonic()
    before = low_queue_lengths()
    assert before == {"a.low": 0, "b.low": 0, "c.low": 20}

    # Critical and normal leads go through, past the LOW messages parked in c.low.
    critical = post_leads(api, key, 10, "critical")
    normal = post_leads(api, key, 10, "normal")
    wait_until(
        lambda: (
            Lead.objects.filter(trace_id__in=critical + normal, status=LeadStatus.SYNCED).count()
            == 20
        ),
        timeout=60,
        message="critical and normal leads did not reach synced while LOW was paused",
    )

    # Dead letters of LOW leads, replayed by an operator during the pause, and pool A's
    # hand-off of a LOW batch it was qualifying as the pause began: both wait in the ledger.
    dead = [
        stored_lead(tenant, "low", qualified=False, age=hour_ago, status=LeadStatus.DEAD_LETTERED)
        for _ in range(3)
    ]
    letters = DeadLetter.objects.bulk_create(
        [DeadLetter(tenant=tenant, lead_id=t, stage="crm", error="test", attempts=3) for t in dead]
    )
    assert dead_letters_replay([letter.id for letter in letters]) == 3
    handed = [stored_lead(tenant, "low", qualified=q, age=timedelta()) for q in (True, False)]
    route = leads_route(handed[:1], handed[1:], "low", shedding_current())
    assert (route.to_enrich, route.to_sync) == ([], [])

    # Through two sweeps and past the republish period (20 s on the live stack), nothing new
    # lands in *.low; what waits is counted where it waits.
    while time.monotonic() - claimed_at < 25:
        assert low_queue_lengths() == before
        time.sleep(1.0)
    assert low_queue_lengths() == before
    metrics = control_metrics(live_stack)
    assert metrics.value("leadflow_tier_inflight", tier="low") >= 40
    assert metrics.value("leadflow_tier_backlog", tier="low") >= 50
    assert metrics.value("leadflow_deferred_open", kind="crm_sync", reason="paused") >= 5
    held = DeferredWork.objects.filter(
        lead_id__in=handed + dead, reason=DeferredReason.PAUSED, done_at__isnull=True
    )
    assert sorted(held.values_list("kind", flat=True)) == sorted(
        [DeferredKind.ENRICHMENT] + [DeferredKind.CRM_SYNC] * 5
    )
    assert not Lead.objects.filter(trace_id__in=in_inbox).exists()

    # Resumed: every LOW lead goes on, from wherever it waited.
    low_paused()
    every_low = queued + stalled + in_inbox + dead + handed
    wait_until(
        lambda: (
            Lead.objects.filter(trace_id__in=every_low, status=LeadStatus.SYNCED).count()
            == len(every_low)
        ),
        timeout=120,
        interval=0.5,
        message="LOW leads did not all reach synced after the pause",
    )
    assert not held.exists()  # the ledger rows are closed by the stages that did the work
    assert not DeadLetter.objects.filter(lead_id__in=dead, replayed_at__isnull=True).exists()
    assert Lead.objects.get(trace_id=handed[0]).enriched_at is not None
    for batch in claimed:  # republished after the pause, stored, released
        assert not get_redis().exists(redis_keys.inflight_batch_key(batch.batch_id))


def test_pool_a_hands_leads_bound_for_a_paused_tier_to_the_ledger(make_tenant):
    tenant, _ = make_tenant()
    paused = Shedding(low_paused=True)
    qualified, under = (stored_lead(tenant, "low", qualified=q, age=timedelta()) for q in (1, 0))

    route = leads_route([qualified], [under], "low", paused)

    assert (route.to_enrich, route.to_sync) == ([], [])
    rows = DeferredWork.objects.filter(lead_id__in=[qualified, under], done_at__isnull=True)
    assert sorted((str(r.lead_id), r.kind, r.reason) for r in rows) == sorted(
        [
            (qualified, DeferredKind.ENRICHMENT, DeferredReason.PAUSED),
            (qualified, DeferredKind.CRM_SYNC, DeferredReason.PAUSED),
            (under, DeferredKind.CRM_SYNC, DeferredReason.PAUSED),
        ]
    )
    held = Lead.objects.get(trace_id=qualified)
    assert held.enrichment_deferred and held.sync_deferred
    # The other tiers go on under the same pause.
    normal = [stored_lead(tenant, "normal", qualified=q, age=timedelta()) for q in (1, 0)]
    route = leads_route(normal[:1], normal[1:], "normal", paused)
    assert (route.to_enrich, route.to_sync) == (normal[:1], normal[1:])


def test_reports_due_while_low_is_paused_wait_in_the_ledger(make_tenant, settings):
    settings.REPORT_PERIOD_SECONDS = 60
    tenant, _ = make_tenant()
    period_start = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=1)
    stored_lead(tenant, "normal", qualified=True, age=timezone.now() - period_start)
    client = get_redis()
    client.set(
        REPORTS_LAST_PERIOD_KEY.format(period=60), int(period_start.timestamp()) - 60
    )  # the period before was the last one scheduled
    # NORMAL mode, reports on, LOW paused by the operators: reports go to c.low, which is paused.
    paused = Shedding(mode=Mode.NORMAL, low_paused=True)
    before = client.llen("c.low")
    try:
        reports_schedule(paused, report_sender(paused))
    finally:
        client.delete(REPORTS_LAST_PERIOD_KEY.format(period=60))
    assert client.llen("c.low") == before
    rows = DeferredWork.objects.filter(tenant=tenant, done_at__isnull=True)
    assert sorted((r.kind, r.reason) for r in rows) == [
        (DeferredKind.ANALYTICS, DeferredReason.PAUSED),
        (DeferredKind.REPORT, DeferredReason.PAUSED),
    ]
