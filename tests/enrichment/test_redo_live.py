"""Degraded enrichments are redone when the AI breaker closes (an event, not a timer), on the
live platform: the AI provider (the session's HTTP double) fails, a tenant's leads are enriched
by the local rules and delivered so, the breaker opens; while the provider stays down nothing
is redone and the CRM hears nothing more; once it is back, pool B's probe closes the breaker,
each degraded lead is redone once and its CRM gets one update; a lead degraded again by its
redo does not loop. One test, in two phases, to post and degrade the leads once (CI time).
Breaker reset: 3 s here."""

import json
import time
import uuid

import pytest

from apps.control.models import DeferredWork
from apps.enrichment.services import AI_PROBE_DOMAIN
from apps.leads.models import Lead
from leadflow.breakers import breaker_recovered_at, breaker_state
from tests.live.api import auth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

LEADS = 6


def asked(calls: list[dict]) -> list[list[str]]:
    """The domains of each AI call."""
    return [json.loads(call["body"]["messages"][-1]["content"])["domains"] for call in calls]


def crm_leads(double, path: str) -> list[dict]:
    """Every lead the tenant's CRM received, once per delivery."""
    return [lead for call in double.calls("crm", path=path) for lead in call["body"]["leads"]]


@pytest.fixture
def degraded(api, make_tenant, double, live_stack):
    """LEADS qualified leads of one tenant (its CRM a path of the double), each enriched by
    the local rules while the provider failed, synced; the AI breaker open. Posted one at a
    time, so each is its own call to the provider: the 5th failure opens the breaker."""
    path = f"/crm/redo-{uuid.uuid4().hex[:8]}"
    tenant, key = make_tenant("redo", crm_webhook_url=double.url + path)
    double.configure("ai", failure_rate=1.0)
    domains = [f"acme-{uuid.uuid4().hex[:10]}.com" for _ in range(LEADS)]
    trace_ids = []
    for domain in domains:
        lead = {"email": f"buyer@{domain}", "phone": "+1 415 555 0100", "company": "Acme",
                "source": "google_ads"}  # fmt: skip
        response = api.post("/api/v1/leads", json=lead, headers=auth(key))
        assert response.status_code == 202, response.text
        trace_ids.append(response.json()["trace_id"])
        wait_until(
            lambda: Lead.objects.filter(trace_id=trace_ids[-1], status="synced").exists(),
            timeout=30,
            message="a degraded lead was not synced",
        )
    leads = Lead.objects.filter(trace_id__in=trace_ids)
    assert leads.filter(ai_degraded=True, enrichment__provider="local").count() == LEADS
    assert breaker_state("ai") == "open"
    assert sorted(lead["trace_id"] for lead in crm_leads(double, path)) == sorted(trace_ids)
    return trace_ids, domains, path


def lead_calls(double, domains: list[str]) -> dict[str, int]:
    """How many AI calls asked about each of these domains."""
    counts = dict.fromkeys(domains, 0)
    for call_domains in asked(double.calls("ai")):
        for domain in call_domains:
            if domain in counts:
                counts[domain] += 1
    return counts


def test_degraded_leads_wait_while_the_provider_is_down_then_are_redone_once_when_it_is_back(
    double, degraded
):
    trace_ids, domains, path = degraded
    failed_calls = lead_calls(double, domains)
    ai_calls = len(double.calls("ai"))

    # Still down: nothing is redone, the CRM hears nothing more, nothing loops.
    time.sleep(8)  # two reset periods (3 s), a backfill retry period (5 s), eight passes
    assert lead_calls(double, domains) == failed_calls  # no redo reached the provider
    assert len(crm_leads(double, path)) == LEADS
    # Only probes tried the provider meanwhile, one per reset period at most.
    probes = asked(double.calls("ai")[ai_calls:])
    assert all(call == [AI_PROBE_DOMAIN] for call in probes), probes
    assert 1 <= len(probes) <= 8 / 3 + 1
    assert breaker_state("ai") == "open"
    # No redo ran at all (a redo closes the lead's row, and one degraded again opens another).
    rows = DeferredWork.objects.filter(lead_id__in=trace_ids, reason="ai_degraded")
    assert (rows.filter(done_at=None).count(), rows.count()) == (LEADS, LEADS)
    assert Lead.objects.filter(trace_id__in=trace_ids, ai_degraded=True).count() == LEADS

    # The provider is back, but leaves two domains out of its answers: those two leads are
    # degraded again by their redo, and must wait for the next recovery, not loop.
    double.configure("ai", failure_rate=0.0, omit_domains=domains[:2])
    back_at = time.time()
    redone = Lead.objects.filter(
        trace_id__in=trace_ids[2:], ai_degraded=False, enrichment__provider="http"
    )
    wait_until(lambda: redone.count() == LEADS - 2, timeout=30, message="not redone")
    wait_until(
        lambda: len(crm_leads(double, path)) >= 2 * LEADS - 2, timeout=30, message="no update"
    )
    assert breaker_state("ai") == "closed" and breaker_recovered_at("ai") >= back_at
    time.sleep(8)  # past the backfill's retry period (5 s): a second redo would show by now

    # Each lead was asked about once after the provider came back: its redo.
    after = lead_calls(double, domains)
    assert {d: after[d] - failed_calls[d] for d in domains} == dict.fromkeys(domains, 1)
    # The CRM: each lead's first delivery (degraded), and one update for each lead redone with
    # the provider's answer, carrying it; nothing for the two degraded again.
    delivered = crm_leads(double, path)
    per_lead = {t: [lead for lead in delivered if lead["trace_id"] == t] for t in trace_ids}
    assert {t: len(per_lead[t]) for t in trace_ids[:2]} == dict.fromkeys(trace_ids[:2], 1)
    for trace_id, domain in zip(trace_ids[2:], domains[2:], strict=True):
        first, update = per_lead[trace_id]
        assert first["ai_degraded"] is True and update["ai_degraded"] is False
        assert update["enrichment"]["summary"] == f"{domain} profile from the AI double"
    # The two degraded again wait in the ledger for the next recovery, not for a timer.
    waiting = rows.filter(done_at=None)
    assert sorted(str(t) for t in waiting.values_list("lead_id", flat=True)) == sorted(
        trace_ids[:2]
    )
    assert not waiting.filter(sent_at__isnull=False).exists()
