"""One tenant's CRM trouble stays that tenant's: pool C's service against the real PostgreSQL,
Redis and the HTTP double playing each tenant's CRM (a path each).

What crosses processes (retries on their schedule, a redelivered message, the metrics) is in
test_isolation_live.py.
"""

import json
import time
import uuid

import pytest
from django.conf import settings

from apps.crm.adapters import reply_stored
from apps.crm.leases import (
    deliveries_mark_sent,
    delivery_lease_keep,
    delivery_lease_seconds,
    delivery_lease_take,
)
from apps.crm.models import CrmSync, DeadLetter
from apps.crm.services import crm_retry_countdown, leads_sync
from apps.leads.models import Lead
from leadflow.outbound import DEADLINE_HITS, RESPONSE_TRUNCATED, Deadline, OutboundReply
from leadflow.redis_conn import get_redis
from tests.doubles.postgres_faults import postgres_refusing
from tests.factories import lead_for_crm_make, lead_ids

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenants(crm, crm_tenant):
    """X, Y with a CRM each (paths /crm/x-..., /crm/y-...) and Z with the local adapter."""

    def webhook(name: str):
        path = f"/crm/{name}-{uuid.uuid4().hex[:6]}"
        tenant = crm_tenant(crm_webhook_url=crm.url + path)
        tenant.path = path
        return tenant

    return webhook("x"), webhook("y"), crm_tenant()


def statuses(*leads) -> list[str]:
    return [Lead.objects.get(pk=lead.pk).status for lead in leads]


@pytest.mark.parametrize("status", [401, 403, 404])
def test_one_tenants_refusal_dead_letters_its_leads_only(crm, tenants, status):
    x, y, z = tenants
    crm.configure("crm", path=x.path, failure_rate=1.0, failure_status=status)
    # X first: the batch used to stop at the first tenant that failed.
    x_leads = [lead_for_crm_make(x) for _ in range(3)]
    others = [lead_for_crm_make(y), lead_for_crm_make(z), lead_for_crm_make(y)]

    outcome = leads_sync(lead_ids([*x_leads, *others]))

    assert outcome.retry == [] and outcome.later == []
    assert statuses(*others) == ["synced"] * 3
    assert statuses(*x_leads) == ["dead_lettered"] * 3
    # The endpoint refused, whichever leads: the group is not split.
    assert len(crm.calls("crm", path=x.path)) == 1
    letter = DeadLetter.objects.get(lead=x_leads[0])
    assert (letter.attempts, letter.error[:11]) == (1, "CrmRejected")


def test_one_tenants_outage_retries_its_leads_only(crm, tenants):
    x, y, z = tenants
    crm.configure("crm", path=x.path, failure_rate=1.0, failure_status=503)
    x_leads = [lead_for_crm_make(x) for _ in range(2)]
    others = [lead_for_crm_make(y), lead_for_crm_make(z)]

    outcome = leads_sync(lead_ids([*x_leads, *others]))

    assert [retry.trace_ids for retry in outcome.retry] == [lead_ids(x_leads)]
    assert statuses(*others) == ["synced", "synced"]
    assert statuses(*x_leads) == ["enriched", "enriched"]


def test_a_refused_group_is_halved_until_the_refused_lead_is_alone(crm, tenants):
    x, y, _ = tenants
    bad = lead_for_crm_make(x, email="refused@example.com")
    good = [lead_for_crm_make(x) for _ in range(7)]
    crm.configure("crm", path=x.path, refuse_emails=[bad.email])
    leads = [*good[:3], bad, *good[3:]]

    outcome = leads_sync(lead_ids([*leads, lead_for_crm_make(y)]))

    assert outcome.retry == []
    assert statuses(*good) == ["synced"] * 7
    assert statuses(bad) == ["dead_lettered"]
    assert "422" in DeadLetter.objects.get(lead=bad).error
    # 8, then 4 + 4, then 2 + 2, then 1 + 1: only the halves holding the refused lead split.
    sizes = [len(call["body"]["leads"]) for call in crm.calls("crm", path=x.path)]
    assert sorted(sizes, reverse=True) == [8, 4, 4, 2, 2, 1, 1]


def test_halving_stops_at_its_call_budget_and_dead_letters_the_rest(crm, tenants, settings):
    settings.CRM_REFUSAL_SPLIT_CALLS = 2
    x, _, _ = tenants
    leads = [
        lead_for_crm_make(x, email=f"r{n}-{uuid.uuid4().hex[:6]}@example.com") for n in range(8)
    ]
    crm.configure("crm", path=x.path, refuse_emails=[leads[0].email, leads[7].email])

    leads_sync(lead_ids(leads))

    assert len(crm.calls("crm", path=x.path)) == 3  # the group, then its two halves
    assert statuses(*leads) == ["dead_lettered"] * 8


def test_a_dripping_crm_is_cut_at_its_deadline(crm, tenants, settings):
    settings.CRM_TIMEOUT_SECONDS = 1.0
    x, y, _ = tenants
    # 100 ms a byte: the reply would take ~10 s; each read gets its byte well within 1 s.
    crm.configure("crm", path=x.path, drip_ms=100)
    x_lead, y_lead = lead_for_crm_make(x), lead_for_crm_make(y)
    hits = DEADLINE_HITS.labels("crm")._value.get()

    started = time.monotonic()
    outcome = leads_sync(lead_ids([x_lead, y_lead]))

    assert time.monotonic() - started < 5  # not the ~10 s the drip takes
    [retry] = outcome.retry
    assert retry.trace_ids == lead_ids([x_lead]) and "no complete reply within 1s" in retry.error
    assert DEADLINE_HITS.labels("crm")._value.get() == hits + 1
    assert statuses(y_lead) == ["synced"]


def test_a_huge_reply_is_read_up_to_the_cap_and_stored_cut(crm, tenants):
    x, _, _ = tenants
    crm.configure("crm", path=x.path, body_bytes=20_000_000)
    leads = [lead_for_crm_make(x) for _ in range(2)]
    truncated = RESPONSE_TRUNCATED.labels("crm")._value.get()

    leads_sync(lead_ids(leads))

    assert statuses(*leads) == ["synced", "synced"]
    response = CrmSync.objects.get(lead=leads[0]).response
    assert response["status"] == 200
    assert response["body_truncated"] is True
    assert response["body_bytes_read"] == settings.CRM_RESPONSE_MAX_BYTES
    assert response["body"].startswith('{"accepted": 2, "pad": "xxx')
    assert len(response["body"]) <= 2000 and response["body"].endswith("…")
    assert RESPONSE_TRUNCATED.labels("crm")._value.get() == truncated + 1


def test_a_reply_postgresql_cannot_store_is_kept_as_text(crm, tenants):
    x, _, _ = tenants
    crm.configure("crm", path=x.path, reply_json={"note": "nul \x00 here"})
    lead = lead_for_crm_make(x)

    leads_sync(lead_ids([lead]))

    assert statuses(lead) == ["synced"]
    body = CrmSync.objects.get(lead=lead).response["body"]
    assert json.loads(body.replace("\ufffd", "\\u0000")) == {"note": "nul \x00 here"}


def test_leads_another_run_is_delivering_are_left_to_it(crm, tenants):
    x, _, _ = tenants
    lead = lead_for_crm_make(x)
    other_run = delivery_lease_take(x.id, lead_ids([lead]), "other-run", seconds=30)
    assert other_run.to_deliver == lead_ids([lead])

    outcome = leads_sync(lead_ids([lead]))

    assert crm.calls("crm", path=x.path) == []
    assert outcome.retry == [] and outcome.later == []
    # Looked at again when the other run's lease ends (it may have died meanwhile).
    [(trace_ids, wait)] = outcome.waiting
    assert trace_ids == lead_ids([lead]) and 25 < wait <= 30
    assert statuses(lead) == ["enriched"]


def test_a_killed_runs_leases_lapse_within_one_calls_length(tenants):
    x, _, _ = tenants
    lead = lead_for_crm_make(x)
    delivery_lease_take(x.id, lead_ids([lead]), "killed-run")  # and never released

    ttl = get_redis().pttl(f"lf:crm:{{{x.id}}}:lease:{lead_ids([lead])[0]}") / 1000
    assert 0 < ttl <= delivery_lease_seconds() == settings.CRM_TIMEOUT_SECONDS + 5


def test_a_run_sends_only_the_leads_whose_lease_is_still_its_own(tenants):
    x, _, _ = tenants
    kept, lapsed = lead_for_crm_make(x), lead_for_crm_make(x)
    mine = delivery_lease_take(x.id, lead_ids([kept, lapsed]), "stalled-run", seconds=1)
    # The stalled run's lease on one lead lapsed and another run took it.
    get_redis().delete(f"lf:crm:{{{x.id}}}:lease:{lead_ids([lapsed])[0]}")
    assert delivery_lease_take(x.id, lead_ids([lapsed]), "other-run").to_deliver == lead_ids(
        [lapsed]
    )

    assert delivery_lease_keep(mine, lead_ids([kept, lapsed])) == lead_ids([kept])
    ttl = get_redis().pttl(f"lf:crm:{{{x.id}}}:lease:{lead_ids([kept])[0]}") / 1000
    assert 1 < ttl <= delivery_lease_seconds()  # extended for one more call


def test_leads_delivered_but_not_recorded_are_recorded_without_a_second_delivery(crm, tenants):
    # What a run leaves when PostgreSQL fails between the CRM's answer and the recording.
    x, _, _ = tenants
    leads = [lead_for_crm_make(x) for _ in range(2)]
    stored = {"status": 200, "delivery_id": "d-1", "body": {"accepted": 2}}
    deliveries_mark_sent(x.id, lead_ids(leads), "d-1", stored)

    leads_sync(lead_ids(leads))

    assert crm.calls("crm", path=x.path) == []
    assert statuses(*leads) == ["synced", "synced"]
    assert CrmSync.objects.get(lead=leads[1]).response == stored
    # The marks are gone once recorded: a later resend is delivered.
    leads_sync(lead_ids(leads), resend=True)
    assert len(crm.calls("crm", path=x.path)) == 1


def test_a_tenant_that_does_not_fit_before_the_deadline_is_left_for_later(crm, tenants, settings):
    settings.CRM_TIMEOUT_SECONDS = 5.0
    x, y, z = tenants
    leads = [lead_for_crm_make(x), lead_for_crm_make(y), lead_for_crm_make(z)]

    outcome = leads_sync(lead_ids(leads), deadline=Deadline(3.0))

    assert crm.calls("crm") == []
    assert outcome.later == lead_ids([leads[0], leads[1]])  # a remote call no longer fits
    assert statuses(*leads) == ["enriched", "enriched", "synced"]  # the local one does


def test_a_tenant_waiting_long_for_its_pace_holds_no_thread(crm, tenants, settings):
    settings.CRM_RATE_PER_SECOND = 0.1  # one lead every 10 s
    x, _, _ = tenants
    first, second = lead_for_crm_make(x), lead_for_crm_make(x)
    assert leads_sync(lead_ids([first])).waiting == []

    started = time.monotonic()
    outcome = leads_sync(lead_ids([second]))

    assert time.monotonic() - started < 3
    [(trace_ids, wait)] = outcome.waiting
    assert trace_ids == lead_ids([second]) and 5 < wait <= 10
    assert statuses(first, second) == ["synced", "enriched"]


def test_a_lead_postgresql_refuses_to_record_is_quarantined_alone(crm, tenants):
    x, _, _ = tenants
    leads = [lead_for_crm_make(x) for _ in range(5)]
    poison = leads[2]
    with postgres_refusing("crm_crmsync", poison.trace_id):
        leads_sync(lead_ids(leads))

    assert statuses(*leads) == ["synced", "synced", "failed", "synced", "synced"]
    poison.refresh_from_db()
    assert poison.failed_stage == "crm"
    assert "DataError" in poison.failed_reason and "refused for the test" in poison.failed_reason
    assert len(crm.calls("crm", path=x.path)) == 1  # found by halving the records, not the calls


def test_retry_countdowns_follow_1_2_4_seconds_with_20_percent_jitter():
    for attempt, nominal in ((1, 1.0), (2, 2.0), (3, 4.0)):
        countdowns = [crm_retry_countdown(attempt) for _ in range(200)]
        assert all(0.8 * nominal <= c <= 1.2 * nominal for c in countdowns)
        assert max(countdowns) - min(countdowns) > 0.2 * nominal  # spread, not one value
    assert crm_retry_countdown(10) <= 1.2 * settings.CRM_RETRY_BACKOFF_MAX_SECONDS


def test_a_reply_nested_past_the_parsers_depth_is_kept_as_text():
    deep = b"[" * 100_000 + b"]" * 100_000

    stored = reply_stored(OutboundReply(status=200, body=deep, truncated=False))

    assert stored["body_truncated"] is True and stored["body"].startswith("[[[")
    assert len(stored["body"]) <= 2000
