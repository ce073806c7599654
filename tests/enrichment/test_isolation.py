"""One domain, one lead or one slow reply never fails pool B's batch: enrichment against the real
PostgreSQL, Redis and the HTTP double as the AI provider."""

import time

import pytest

from apps.enrichment.services import leads_enrich
from apps.leads.models import Lead
from leadflow.breakers import breaker
from leadflow.outbound import DEADLINE_HITS, RESPONSE_TRUNCATED, Deadline
from tests.doubles.http_double import company_profile
from tests.doubles.postgres_faults import postgres_refusing
from tests.factories import lead_ids, lead_make

pytestmark = pytest.mark.django_db


def _providers(leads) -> list[tuple[str, bool]]:
    rows = Lead.objects.filter(trace_id__in=lead_ids(leads)).values_list(
        "trace_id", "enrichment__provider", "ai_degraded"
    )
    by_id = {str(trace_id): (provider, degraded) for trace_id, provider, degraded in rows}
    return [by_id[trace_id] for trace_id in lead_ids(leads)]


@pytest.mark.parametrize("flaw", ["omit_domains", "bad_domains"])
def test_a_reply_that_leaves_out_one_domain_degrades_that_domain_alone(tenant, domains, ai, flaw):
    names = domains(50)
    leads = [lead_make(tenant, f"buyer@{domain}") for domain in names]
    ai.configure("ai", **{flaw: [names[17]]})

    assert leads_enrich(lead_ids(leads)).enriched == lead_ids(leads)

    assert len(ai.calls("ai")) == 1  # one 50-domain call
    providers = _providers(leads)
    assert providers[17] == ("local", True)
    assert providers[:17] + providers[18:] == [("http", False)] * 49
    lead = Lead.objects.get(pk=leads[3].pk)
    assert lead.enrichment.data == {"domain": names[3], **company_profile(names[3])}
    # The provider answered: the breaker counts no failure.
    ai_breaker = breaker("ai")
    assert (ai_breaker.current_state, ai_breaker.fail_counter) == ("closed", 0)


def test_a_dripping_provider_is_cut_at_its_deadline(tenant, domains, ai, settings):
    settings.AI_PROVIDER_TIMEOUT_SECONDS = 1.0
    ai.configure("ai", drip_ms=100)  # the reply would take ~30 s, a byte every 100 ms
    (domain,) = domains()
    lead = lead_make(tenant, f"a@{domain}")
    hits = DEADLINE_HITS.labels("ai")._value.get()

    started = time.monotonic()
    assert leads_enrich(lead_ids([lead])).enriched == lead_ids([lead])

    assert time.monotonic() - started < 5
    assert _providers([lead]) == [("local", True)]
    assert DEADLINE_HITS.labels("ai")._value.get() == hits + 1
    assert breaker("ai").fail_counter == 1  # a failed call counts


def test_a_huge_reply_is_not_read_past_the_cap(tenant, domains, ai, settings):
    settings.AI_RESPONSE_MAX_BYTES = 64 * 1024
    ai.configure("ai", body_bytes=30_000_000)
    (domain,) = domains()
    lead = lead_make(tenant, f"a@{domain}")
    truncated = RESPONSE_TRUNCATED.labels("ai")._value.get()

    leads_enrich(lead_ids([lead]))

    assert _providers([lead]) == [("local", True)]
    assert RESPONSE_TRUNCATED.labels("ai")._value.get() == truncated + 1


def test_domains_not_asked_before_the_deadline_are_left_for_later(tenant, domains, ai, settings):
    settings.AI_PROVIDER_TIMEOUT_SECONDS = 2.0
    ai.configure("ai", latency_ms=1500)
    leads = [lead_make(tenant, f"x@{domain}") for domain in domains(150)]

    outcome = leads_enrich(lead_ids(leads), deadline=Deadline(3.0))

    # The first call (50 domains) fits; after it, less than a call's 2 s is left.
    assert len(ai.calls("ai")) == 1
    assert len(outcome.enriched) == 50 and len(outcome.later) == 100
    assert set(outcome.enriched) | set(outcome.later) == set(lead_ids(leads))
    statuses = Lead.objects.filter(trace_id__in=outcome.later).values_list("status", flat=True)
    assert set(statuses) == {"qualified"}  # not degraded: enriched by the next run


def test_a_lead_postgresql_refuses_is_quarantined_and_its_batch_mates_enriched(tenant, domains, ai):
    leads = [lead_make(tenant, f"x@{domain}") for domain in domains(6)]
    poison = leads[4]
    with postgres_refusing("enrichment_leadenrichment", poison.trace_id):
        outcome = leads_enrich(lead_ids(leads))

    assert outcome.enriched == lead_ids(leads[:4] + leads[5:])
    poison.refresh_from_db()
    assert (poison.status, poison.failed_stage) == ("failed", "enrichment")
    assert "refused for the test" in poison.failed_reason
    assert _providers(leads[:4]) == [("http", False)] * 4
