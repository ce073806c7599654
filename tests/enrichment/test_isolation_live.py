"""A lead pool B cannot write fails alone, on the live platform: two tenants' qualified leads go
through one shared batch (the control process is stopped for the module; one dispatch pass runs
here), PostgreSQL refuses one lead's enrichment, and every other lead reaches `synced`."""

import json
import time
import uuid
from collections import Counter

import pytest

from apps.control.dispatcher import Dispatcher
from apps.leads.models import Lead
from leadflow.breakers import breaker
from tests.doubles.postgres_faults import (
    postgres_cancel,
    postgres_refusing,
    postgres_table_locked,
    postgres_waiting_on,
)
from tests.live.api import auth, wait_until
from tests.live.logs import LogTail

pytestmark = pytest.mark.django_db(transaction=True)


def post_qualified(api, key: str, count: int) -> list[str]:
    """Leads over the scoring threshold (business e-mail, phone, company, paid source)."""
    leads = [
        {
            "email": f"buyer@acme-{uuid.uuid4().hex[:10]}.com",
            "phone": "+1 415 555 0100",
            "company": "Acme",
            "source": "google_ads",
        }
        for _ in range(count)
    ]
    response = api.post("/api/v1/leads/batch", json={"leads": leads}, headers=auth(key))
    assert response.status_code == 202, response.text
    return [result["trace_id"] for result in response.json()["results"]]


def statuses(trace_ids: list[str]) -> Counter:
    return Counter(Lead.objects.filter(trace_id__in=trace_ids).values_list("status", flat=True))


def test_a_lead_whose_enrichment_cannot_be_written_is_quarantined_alone(
    api, make_tenant, control_stopped
):
    (noisy, noisy_key), (clean, clean_key) = make_tenant("b-noisy"), make_tenant("b-clean")
    noisy_ids = post_qualified(api, noisy_key, 5)
    clean_ids = post_qualified(api, clean_key, 5)
    poison = noisy_ids[2]
    others = [trace_id for trace_id in noisy_ids + clean_ids if trace_id != poison]
    pool_b = LogTail(control_stopped, "pool-b")

    with postgres_refusing("enrichment_leadenrichment", poison):
        assert Dispatcher().dispatch_once() >= 10
        try:
            wait_until(lambda: statuses(others) == {"synced": len(others)}, timeout=30)
        except AssertionError:
            raise AssertionError(f"batch-mates: {dict(statuses(others))}") from None
        wait_until(lambda: statuses([poison]) == {"failed": 1}, timeout=10)

    lead = Lead.objects.get(trace_id=poison)
    assert lead.failed_stage == "enrichment" and "refused for the test" in lead.failed_reason
    shown = api.get(f"/api/v1/leads/{poison}", headers=auth(noisy_key)).json()
    assert shown["status"] == "failed" and shown["failure"]["stage"] == "enrichment"
    assert not Lead.objects.filter(trace_id__in=others, ai_degraded=True).exists()
    # Pool B's log names it: which lead, which stage, why (with the traceback).
    [line] = [line for line in pool_b.about(poison) if line.get("stage")]
    assert line["stage"] == "enrichment" and "refused for the test" in line["reason"]
    assert line["tenant"] == noisy.id and "exception" in line
    # Accounting closes per tenant: every lead accepted is synced or failed.
    for tenant, accepted in ((noisy, noisy_ids), (clean, clean_ids)):
        counts = Counter(Lead.objects.filter(tenant=tenant).values_list("status", flat=True))
        assert sum(counts.values()) == len(accepted) and set(counts) <= {"synced", "failed"}


def test_a_database_error_writing_enrichments_is_retried_not_quarantined(
    api, make_tenant, control_stopped
):
    tenant, key = make_tenant("b-outage")
    trace_ids = post_qualified(api, key, 4)

    with postgres_table_locked("enrichment_leadenrichment"):
        assert Dispatcher().dispatch_once() >= 4
        blocked = wait_until(lambda: postgres_waiting_on("enrichment_leadenrichment"), timeout=30)
        postgres_cancel(blocked)  # an OperationalError, as a lost connection is
        time.sleep(3)  # the task fails and is retried (1 s); the retry waits on the lock too

    try:
        wait_until(lambda: statuses(trace_ids) == {"synced": 4}, timeout=30)
    except AssertionError:
        raise AssertionError(f"after the outage: {dict(statuses(trace_ids))}") from None
    assert not Lead.objects.filter(trace_id__in=trace_ids, ai_degraded=True).exists()


def test_an_ai_reply_missing_one_of_50_domains_degrades_that_lead_alone(
    api, make_tenant, double, control_stopped
):
    _, key = make_tenant("b-partial")
    domains = [f"acme-{uuid.uuid4().hex[:10]}.com" for _ in range(50)]
    double.configure("ai", omit_domains=[domains[7]])
    leads = [
        {"email": f"buyer@{domain}", "phone": "+1 415 555 0100", "company": "Acme",
         "source": "google_ads"}
        for domain in domains
    ]  # fmt: skip
    response = api.post("/api/v1/leads/batch", json={"leads": leads}, headers=auth(key))
    trace_ids = [result["trace_id"] for result in response.json()["results"]]

    assert Dispatcher().dispatch_once() >= 50
    try:
        wait_until(lambda: statuses(trace_ids) == {"synced": 50}, timeout=30)
    except AssertionError:
        raise AssertionError(f"{dict(statuses(trace_ids))}") from None

    asked = [json.loads(call["body"]["messages"][-1]["content"]) for call in double.calls("ai")]
    assert set(domains) <= {domain for body in asked for domain in body["domains"]}
    degraded = Lead.objects.filter(trace_id__in=trace_ids, ai_degraded=True)
    assert [lead.email for lead in degraded] == [f"buyer@{domains[7]}"]
    assert Lead.objects.filter(trace_id__in=trace_ids, enrichment__provider="http").count() == 49
    assert (breaker("ai").current_state, breaker("ai").fail_counter) == ("closed", 0)
