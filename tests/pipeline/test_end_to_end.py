"""The whole platform, end to end: HTTP intake → inboxes → dispatcher → pools A, B, C → PostgreSQL.

Real gunicorn, Celery workers and control process (the live_stack fixture); leads are posted
over HTTP and their outcome is read from PostgreSQL.
"""

import time
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.db.models import Count
from django.utils import timezone

from apps.control.models import DeferredWork
from apps.control.sweeper import orphaned_leads_resend
from apps.crm.dead_letters import dead_letters_replay
from apps.crm.models import DeadLetter
from apps.leads.models import Lead, LeadStatus
from leadflow import handoff
from leadflow.redis_conn import get_redis
from tests.factories import lead_make
from tests.live.api import auth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TIERS = ("critical", "normal", "low")


def make_leads(count: int, tag: str, qualified_every: int = 2) -> list[dict]:
    """Unique emails; every `qualified_every`-th lead scores over the threshold."""
    leads = []
    for i in range(count):
        tier = TIERS[i % 3]
        if i % qualified_every == 0:
            lead = {
                "email": f"buyer-{tag}-{i}@acme-{tag}-{i % 7}.com",
                "company": "Acme",
                "phone": "+1 415 555 0100",
                "source": "google_ads",
                "region": "us",
            }
        else:
            lead = {"email": f"someone-{tag}-{i}@gmail.com"}
        leads.append({**lead, "priority": tier})
    return leads


def post_batches(
    api, key: str, leads: list[dict], size: int = 100, answers: list | None = None
) -> list[str]:
    """Post the leads in batches, all accepted; returns their trace ids (and, in `answers`,
    each lead's answer)."""
    trace_ids = []
    for start in range(0, len(leads), size):
        response = api.post(
            "/api/v1/leads/batch", json={"leads": leads[start : start + size]}, headers=auth(key)
        )
        assert response.status_code == 202, response.text
        results = response.json()["results"]
        trace_ids += [r["trace_id"] for r in results]
        if answers is not None:
            answers += results
    return trace_ids


def statuses(trace_ids: list[str]) -> Counter:
    rows = Lead.objects.filter(trace_id__in=trace_ids).values_list("status", flat=True)
    return Counter(rows)


def test_1000_leads_from_3_tenants_all_reach_synced(api, make_tenant, double):
    tenants = [
        make_tenant("webhook", crm_webhook_url=f"{double.url}/crm/t1"),
        make_tenant("local-a"),
        make_tenant("local-b"),
    ]
    accepted: dict[int, list[str]] = {}
    answers: list[dict] = []
    for index, (tenant, key) in enumerate(tenants):
        count = 334 if index == 0 else 333
        accepted[tenant.id] = post_batches(
            api, key, make_leads(count, f"{tenant.id}"), answers=answers
        )
    all_ids = [t for ids in accepted.values() for t in ids]
    assert len(all_ids) == 1000

    wait_until(
        lambda: statuses(all_ids)[LeadStatus.SYNCED] == 1000,
        timeout=240,
        message=f"not all synced: {statuses(all_ids)}",
    )
    rows_per_tenant = dict(
        Lead.objects.filter(trace_id__in=all_ids)
        .values_list("tenant_id")
        .annotate(n=Count("trace_id"))
    )
    assert rows_per_tenant == {tenant_id: len(ids) for tenant_id, ids in accepted.items()}

    # Qualified leads went through enrichment; the others went straight to the CRM.
    synced = Lead.objects.filter(trace_id__in=all_ids).select_related("enrichment")
    for lead in synced:
        assert lead.score is not None and lead.qualified_at and lead.synced_at
        assert hasattr(lead, "enrichment") == lead.is_qualified
    # Each lead ran in the tier it was answered with: critical leads beyond a tenant's
    # critical credits were demoted to normal, and say so.
    answered = {a["trace_id"]: (a["tier"], a["demoted"]) for a in answers}
    assert {str(lead.trace_id): (lead.tier, lead.demoted) for lead in synced} == answered
    demoted = sum(1 for _, was_demoted in answered.values() if was_demoted)
    assert Counter(lead.tier for lead in synced) == Counter(
        {"critical": 334 - demoted, "normal": 333 + demoted, "low": 333}
    )

    # The webhook tenant's CRM received each of its leads exactly once.
    delivered = [lead["trace_id"] for call in double.calls("crm") for lead in call["body"]["leads"]]
    assert sorted(delivered) == sorted(accepted[tenants[0][0].id])

    # And the API tells the client the same story.
    tenant, key = tenants[1]
    body = api.get(f"/api/v1/leads/{accepted[tenant.id][0]}", headers=auth(key)).json()
    assert body["status"] == "synced"
    assert body["stages"]["crm"]["adapter"] == "local"
    assert body["timestamps"]["synced_at"]


def test_same_email_within_24h_is_marked_duplicate_and_not_processed(api, make_tenant):
    _, key = make_tenant()
    first = {"email": "Repeat@Example.com", "company": "Acme", "source": "partner"}
    second = {"email": "  repeat@example.COM ", "name": "Same person, other body"}
    ids = post_batches(api, key, [first])
    ids += post_batches(api, key, [second])
    wait_until(
        lambda: statuses(ids)[LeadStatus.DUPLICATE] == 1 and sum(statuses(ids).values()) == 2,
        timeout=60,
    )
    # Two pool A processes may take the two batches in either order: the lead stored first
    # is the original, the other its duplicate.
    duplicate = Lead.objects.get(trace_id__in=ids, status=LeadStatus.DUPLICATE)
    original = Lead.objects.exclude(trace_id=duplicate.trace_id).get(trace_id__in=ids)
    assert str(duplicate.duplicate_of) == str(original.trace_id)
    wait_until(lambda: statuses(ids)[LeadStatus.SYNCED] == 1, timeout=60)
    assert duplicate.synced_at is None and duplicate.score is None


def test_pool_a_killed_mid_batch_loses_no_lead(api, make_tenant, live_stack):
    _, key = make_tenant()
    leads = make_leads(4000, uuid.uuid4().hex[:6], qualified_every=3)
    trace_ids = []
    for start in range(0, len(leads), 500):
        response = api.post(
            "/api/v1/leads/batch", json={"leads": leads[start : start + 500]}, headers=auth(key)
        )
        trace_ids += [r["trace_id"] for r in response.json()["results"]]

    def pool_a_holds_a_batch() -> bool:
        # kombu keeps every delivered, not yet acked message in the "unacked" hash.
        return any(b'"a.' in message for message in get_redis().hvals("unacked"))

    wait_until(pool_a_holds_a_batch, timeout=60, interval=0.01, message="pool A never got a batch")
    live_stack.kill("pool-a")
    stored_at_kill = Lead.objects.filter(trace_id__in=trace_ids).count()
    assert stored_at_kill < len(trace_ids), "pool A finished everything before it was killed"
    live_stack.restart("pool-a")

    # The killed batch comes back after the broker's visibility timeout (20 s in tests).
    wait_until(
        lambda: Lead.objects.filter(trace_id__in=trace_ids).count() == len(trace_ids),
        timeout=180,
        message="accepted leads missing from PostgreSQL",
    )
    stored = list(Lead.objects.filter(trace_id__in=trace_ids).values_list("trace_id", flat=True))
    assert sorted(str(t) for t in stored) == sorted(trace_ids)  # each exactly once
    wait_until(
        lambda: statuses(trace_ids)[LeadStatus.SYNCED] == len(trace_ids),
        timeout=180,
        message=f"not all synced after the kill: {statuses(trace_ids)}",
    )


def test_failing_ai_provider_degrades_enrichment_but_leads_complete(api, make_tenant, double):
    # Domains never seen before: no cached AI answer can stand in for the provider.
    double.configure("ai", failure_rate=1.0)
    _, key = make_tenant()
    ids = post_batches(api, key, make_leads(30, uuid.uuid4().hex[:6], qualified_every=1))
    wait_until(
        lambda: statuses(ids)[LeadStatus.SYNCED] == 30, timeout=90, message=f"{statuses(ids)}"
    )
    leads = Lead.objects.filter(trace_id__in=ids).select_related("enrichment")
    assert all(lead.ai_degraded for lead in leads)
    assert all(lead.enrichment.degraded for lead in leads)
    assert double.calls("ai"), "the provider was never tried"
    # Each degraded enrichment waits in the deferred ledger to be redone.
    redo = DeferredWork.objects.filter(lead_id__in=ids, reason="ai_degraded", done_at=None)
    assert redo.count() == 30

    # The provider is back: the backfill redoes them with its answers, and the CRM gets those.
    double.configure("ai", failure_rate=0.0)

    def redone() -> bool:
        rows = Lead.objects.filter(trace_id__in=ids, ai_degraded=False, enrichment_deferred=False)
        return rows.filter(enrichment__provider__in=["http", "cache"]).count() == 30

    wait_until(redone, timeout=90, message="degraded enrichments were not redone")
    assert not redo.exists()
    assert statuses(ids)[LeadStatus.SYNCED] == 30


def test_failing_crm_dead_letters_after_retries_and_replay_delivers(api, make_tenant, double):
    tenant, key = make_tenant(crm_webhook_url=f"{double.url}/crm/down")
    double.configure("crm", failure_rate=1.0)
    ids = post_batches(api, key, make_leads(10, uuid.uuid4().hex[:6], qualified_every=2))
    wait_until(
        lambda: statuses(ids)[LeadStatus.DEAD_LETTERED] == 10,
        timeout=120,
        message=f"{statuses(ids)}",
    )
    letters = DeadLetter.objects.filter(tenant=tenant, replayed_at__isnull=True)
    assert letters.count() == 10
    assert all(letter.attempts >= 2 for letter in letters)  # retried before giving up
    assert all(letter.stage == "crm" for letter in letters)

    double.reset()  # the CRM is back
    get_redis().delete(*get_redis().keys("lf:*:pybreaker:*") or ["-"])
    assert dead_letters_replay(list(letters.values_list("id", flat=True))) == 10
    wait_until(
        lambda: statuses(ids)[LeadStatus.SYNCED] == 10, timeout=60, message=f"{statuses(ids)}"
    )
    assert DeadLetter.objects.filter(tenant=tenant, replayed_at__isnull=True).count() == 0
    delivered = {lead["trace_id"] for call in double.calls("crm") for lead in call["body"]["leads"]}
    assert delivered == set(ids)


def test_a_lead_whose_next_message_was_lost_is_sent_on_by_the_sweeper(live_stack, make_tenant):
    # As if pool A stored these leads an hour ago and their messages to B and C were lost.
    tenant, _ = make_tenant()
    an_hour_ago = timezone.now() - timedelta(hours=1)
    common = {
        "tier": "normal",
        "status": LeadStatus.QUALIFIED,
        "received_at": an_hour_ago,
        "qualified_at": an_hour_ago,
        "score": 70,
    }
    for_b = lead_make(tenant, "lost-b@acme.com", is_qualified=True, **common)
    for_c = lead_make(tenant, "lost-c@gmail.com", is_qualified=False, **common)
    ids = [str(for_b.trace_id), str(for_c.trace_id)]
    # The control process sweeps every 10 s.
    wait_until(
        lambda: statuses(ids)[LeadStatus.SYNCED] == 2, timeout=60, message=f"{statuses(ids)}"
    )
    assert Lead.objects.get(trace_id=for_b.trace_id).enriched_at is not None
    assert Lead.objects.get(trace_id=for_c.trace_id).enriched_at is None


def enriched_a_while_ago(tenant, email: str) -> Lead:
    """A lead pool B enriched 45 s ago: past the 30 s orphan age, far from the stalled sweep."""
    a_while_ago = timezone.now() - timedelta(seconds=45)
    return lead_make(
        tenant,
        email,
        LeadStatus.ENRICHED,
        received_at=a_while_ago,
        qualified_at=a_while_ago,
        enriched_at=a_while_ago,
        score=70,
    )


def test_a_lead_no_message_carries_is_sent_on_within_seconds(live_stack, make_tenant):
    # Its message to pool C was lost (a worker killed between BRPOP and recording it) 45 s ago:
    # far from the 900 s stalled-lead sweep, past the 30 s after which an uncarried lead is an
    # orphan.
    lead = enriched_a_while_ago(make_tenant()[0], "orphan@gmail.com")
    ids = [str(lead.trace_id)]
    # The control process sweeps every 10 s.
    wait_until(
        lambda: statuses(ids)[LeadStatus.SYNCED] == 1, timeout=40, message=f"{statuses(ids)}"
    )


def test_a_lead_a_message_carries_is_left_to_it(live_stack, make_tenant):
    lead = enriched_a_while_ago(make_tenant()[0], "carried@gmail.com")
    ids = [str(lead.trace_id)]
    # Its message waits for a retry's countdown: held by a pool C worker, unacked.
    handoff.send_to_sync(ids, "normal", countdown=120)

    assert ids[0] not in orphaned_leads_resend()
    time.sleep(12)  # a sweep of the control process's has run meanwhile
    assert statuses(ids) == Counter({LeadStatus.ENRICHED: 1})
    assert ids[0] not in orphaned_leads_resend()
