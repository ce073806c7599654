"""leadflow/handoff.py and a paused tier: whoever hands leads on to enrichment or the CRM while
their tier is paused — pool B finishing a b.low batch that was running when the pause began,
pool C re-enqueueing a retry, an operator's replay — the paused queues receive nothing: the
leads wait in the deferred ledger (reason paused) and go on when the tier resumes. Live stack,
LOW paused by the operators' switch (tests/control/test_pause.py's fixture)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.control.models import DeferredKind, DeferredReason, DeferredWork
from apps.leads.models import Lead, LeadStatus
from leadflow import handoff
from tests.control.test_pause import low_paused, low_queue_lengths, stored_lead  # noqa: F401
from tests.live.api import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_hand_offs_to_a_paused_tier_wait_in_the_ledger_then_go_on(make_tenant, low_paused):  # noqa: F811
    tenant, _ = make_tenant()
    now = timedelta()
    # Pool B enriched these as the pause began, and hands them to pool C.
    enriched = [
        stored_lead(
            tenant,
            "low",
            qualified=True,
            age=now,
            status=LeadStatus.ENRICHED,
            enriched_at=timezone.now(),
        )
        for _ in range(2)
    ]
    under = stored_lead(tenant, "low", qualified=False, age=now)  # a retry of pool C's
    to_enrich = stored_lead(tenant, "low", qualified=True, age=now)  # a replay to enrichment
    # Synced without its enrichment (shed); the enrichment's backfill ran during the pause
    # and hands the second delivery, carrying the enrichment, to pool C.
    synced = stored_lead(
        tenant, "low", qualified=True, age=now, status=LeadStatus.SYNCED, synced_at=timezone.now()
    )
    before = low_queue_lengths()

    handoff.send_to_sync(enriched, "low")
    handoff.send_to_sync([under], "low", countdown=1.0)
    handoff.send_to_enrich([to_enrich], "low")
    handoff.send_to_sync([synced], "low", resend=True)

    assert low_queue_lengths() == before
    held = DeferredWork.objects.filter(
        lead_id__in=[*enriched, under, to_enrich, synced], done_at__isnull=True
    )
    assert sorted(
        (str(lead_id), kind) for lead_id, kind in held.values_list("lead_id", "kind")
    ) == sorted(
        [(trace_id, DeferredKind.CRM_SYNC) for trace_id in [*enriched, under, to_enrich]]
        + [(to_enrich, DeferredKind.ENRICHMENT), (synced, DeferredKind.ENRICHMENT)]
    )
    assert set(held.values_list("reason", flat=True)) == {DeferredReason.PAUSED}

    low_paused()  # resumed: the backfill sends them on
    every = [*enriched, under, to_enrich, synced]
    try:
        wait_until(
            lambda: (
                not held.exists()
                and Lead.objects.filter(trace_id__in=every, status=LeadStatus.SYNCED).count() == 5
            ),
            timeout=120,
            interval=0.5,
        )
    except AssertionError:
        statuses = dict(Lead.objects.filter(trace_id__in=every).values_list("trace_id", "status"))
        rows = list(held.values_list("lead_id", "kind", "sent_at"))
        raise AssertionError(f"not all went on after the pause: {statuses}; open: {rows}") from None
    assert Lead.objects.get(trace_id=synced).enriched_at is not None  # enriched, then resent
