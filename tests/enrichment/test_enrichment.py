"""Pool B's enrichment against the real PostgreSQL, Redis and the HTTP double as AI provider."""

import json
import uuid

import pytest

from apps.enrichment.models import LeadEnrichment
from apps.enrichment.providers import (
    HttpProvider,
    LocalProvider,
    ProviderError,
    chat_reply_profiles,
    domain_profile_local,
    provider_from_settings,
)
from apps.enrichment.services import CACHE_TTL_SECONDS, leads_enrich
from apps.leads.models import Lead
from leadflow.breakers import breaker, breaker_state
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import ENRICH_DOMAIN_CACHE_PREFIX
from tests.doubles.http_double import company_profile
from tests.factories import lead_ids, lead_make

# Each test's writes roll back with its transaction: leads_enrich nests its own atomic block
# as a savepoint, and nothing here reads from another connection, so no table flush is needed.
db = pytest.mark.django_db


@db
def test_local_provider_by_default_enriches_without_degrading(tenant, domains, settings):
    settings.AI_PROVIDER_URL = ""
    (domain,) = domains()
    leads = [lead_make(tenant, f"ann@{domain}"), lead_make(tenant, "bob@gmail.com")]

    assert leads_enrich(lead_ids(leads)).enriched == lead_ids(leads)

    for lead in leads:
        lead.refresh_from_db()
        assert lead.status == "enriched"
        assert lead.enriched_at is not None
        assert lead.ai_degraded is False
        assert lead.enrichment.provider == "local"
        assert lead.enrichment.degraded is False
    assert leads[1].enrichment.data["industry"] == "consumer"
    assert leads[0].enrichment.data == {"domain": domain, **domain_profile_local(domain)}


@db
def test_http_provider_enriches_with_its_profile_and_caches_each_domain(tenant, domains, ai):
    first, second = domains(2)
    leads = [
        lead_make(tenant, f"a@{first}"),
        lead_make(tenant, f"b@{first}"),
        lead_make(tenant, f"c@{second}"),
    ]

    assert leads_enrich(lead_ids(leads)).enriched == lead_ids(leads)

    calls = ai.calls("ai")
    assert len(calls) == 1  # one request for the whole batch, each domain asked once
    assert calls[0]["headers"]["Authorization"] == "Bearer sk-test"
    asked = json.loads(calls[0]["body"]["messages"][-1]["content"])["domains"]
    assert sorted(asked) == sorted([first, second])
    for lead in leads:
        lead.refresh_from_db()
        domain = lead.email.split("@")[1]
        assert lead.status == "enriched"
        assert lead.ai_degraded is False
        assert lead.enrichment.provider == "http"
        assert lead.enrichment.data == {"domain": domain, **company_profile(domain)}
    redis = get_redis()
    assert json.loads(redis.get(ENRICH_DOMAIN_CACHE_PREFIX + first)) == company_profile(first)
    assert 0 < redis.ttl(ENRICH_DOMAIN_CACHE_PREFIX + second) <= CACHE_TTL_SECONDS


@db
def test_cached_domain_is_not_asked_again(tenant, domains, ai):
    (domain,) = domains()
    leads_enrich(lead_ids([lead_make(tenant, f"a@{domain}")]))
    assert len(ai.calls("ai")) == 1

    later = lead_make(tenant, f"z@{domain}")
    assert leads_enrich(lead_ids([later])).enriched == lead_ids([later])

    assert len(ai.calls("ai")) == 1
    later.refresh_from_db()
    assert later.ai_degraded is False
    assert later.enrichment.provider == "cache"
    assert later.enrichment.data == {"domain": domain, **company_profile(domain)}


@db
def test_free_mail_domain_is_enriched_locally_and_never_asked_of_the_provider(tenant, ai):
    lead = lead_make(tenant, "someone@gmail.com")

    assert leads_enrich(lead_ids([lead])).enriched == lead_ids([lead])

    assert ai.calls("ai") == []
    lead.refresh_from_db()
    assert lead.ai_degraded is False
    assert lead.enrichment.provider == "local"
    assert lead.enrichment.data["industry"] == "consumer"


@db
def test_batch_of_more_than_fifty_domains_is_asked_fifty_at_a_time(tenant, domains, ai):
    leads = [lead_make(tenant, f"x@{domain}") for domain in domains(120)]

    assert leads_enrich(lead_ids(leads)).enriched == lead_ids(leads)

    sizes = sorted(
        len(json.loads(call["body"]["messages"][-1]["content"])["domains"])
        for call in ai.calls("ai")
    )
    assert sizes == [20, 50, 50]
    assert (
        Lead.objects.filter(trace_id__in=lead_ids(leads), enrichment__provider="http").count()
        == 120
    )


@db
def test_failing_provider_still_enriches_leads_flagged_degraded(tenant, domains, ai):
    ai.configure("ai", failure_rate=1.0)
    (domain,) = domains()
    lead = lead_make(tenant, f"a@{domain}")

    assert leads_enrich(lead_ids([lead])).enriched == lead_ids([lead])

    lead.refresh_from_db()
    assert lead.status == "enriched"
    assert lead.ai_degraded is True
    assert lead.enrichment.provider == "local"
    assert lead.enrichment.degraded is True
    assert lead.enrichment.data == {"domain": domain, **domain_profile_local(domain)}
    assert get_redis().get(ENRICH_DOMAIN_CACHE_PREFIX + domain) is None  # failures are not cached


@db
def test_breaker_opens_after_fail_max_failures_and_stops_calling_the_provider(tenant, domains, ai):
    ai.configure("ai", failure_rate=1.0)
    fail_max = breaker("ai").fail_max

    for domain in domains(fail_max + 3):
        lead = lead_make(tenant, f"a@{domain}")
        assert leads_enrich(lead_ids([lead])).enriched == lead_ids([lead])
        lead.refresh_from_db()
        assert lead.ai_degraded is True

    assert len(ai.calls("ai")) == fail_max
    assert breaker_state("ai") == "open"


@db
def test_cached_domain_is_served_while_the_breaker_is_open(tenant, domains, ai):
    (domain,) = domains()
    leads_enrich(lead_ids([lead_make(tenant, f"a@{domain}")]))
    ai.configure("ai", failure_rate=1.0)
    for other in domains(breaker("ai").fail_max):
        leads_enrich(lead_ids([lead_make(tenant, f"b@{other}")]))
    assert breaker_state("ai") == "open"

    lead = lead_make(tenant, f"c@{domain}")
    assert leads_enrich(lead_ids([lead])).enriched == lead_ids([lead])

    lead.refresh_from_db()
    assert lead.ai_degraded is False
    assert lead.enrichment.provider == "cache"
    assert lead.enrichment.data == {"domain": domain, **company_profile(domain)}


@db
def test_provider_slower_than_the_timeout_degrades_the_lead(tenant, domains, ai, settings):
    settings.AI_PROVIDER_TIMEOUT_SECONDS = 0.2
    ai.configure("ai", latency_ms=1000)
    (domain,) = domains()
    lead = lead_make(tenant, f"a@{domain}")

    assert leads_enrich(lead_ids([lead])).enriched == lead_ids([lead])

    lead.refresh_from_db()
    assert lead.status == "enriched"
    assert lead.ai_degraded is True
    assert lead.enrichment.provider == "local"


@db
def test_redelivery_changes_nothing_and_returns_the_same_ids(tenant, domains, ai):
    leads = [lead_make(tenant, f"a@{domain}") for domain in domains(3)]
    first = leads_enrich(lead_ids(leads)).enriched
    before = {
        row.lead_id: (row.provider, row.data, row.degraded, row.created_at)
        for row in LeadEnrichment.objects.filter(lead__in=leads)
    }
    enriched_at = dict(
        Lead.objects.filter(trace_id__in=lead_ids(leads)).values_list("trace_id", "enriched_at")
    )
    ai.configure("ai", failure_rate=1.0)  # a different outcome would show if it ran again

    second = leads_enrich(lead_ids(leads)).enriched

    assert second == first == lead_ids(leads)
    assert len(ai.calls("ai")) == 1
    after = {
        row.lead_id: (row.provider, row.data, row.degraded, row.created_at)
        for row in LeadEnrichment.objects.filter(lead__in=leads)
    }
    assert after == before
    assert (
        dict(
            Lead.objects.filter(trace_id__in=lead_ids(leads)).values_list("trace_id", "enriched_at")
        )
        == enriched_at
    )
    assert not Lead.objects.filter(trace_id__in=lead_ids(leads), ai_degraded=True).exists()


@db
def test_leads_not_qualified_are_skipped_and_not_returned(tenant, domains, settings):
    settings.AI_PROVIDER_URL = ""
    qualified, synced, duplicate, failed = (
        lead_make(tenant, f"a@{domain}", status)
        for domain, status in zip(
            domains(4), ("qualified", "synced", "duplicate", "failed"), strict=True
        )
    )
    unknown = str(uuid.uuid4())

    result = leads_enrich(
        [unknown, *lead_ids([synced, qualified, duplicate, failed]), "not-a-uuid"]
    ).enriched

    assert result == lead_ids([qualified])
    for lead, status in ((synced, "synced"), (duplicate, "duplicate"), (failed, "failed")):
        lead.refresh_from_db()
        assert lead.status == status
        assert lead.enriched_at is None
        assert not LeadEnrichment.objects.filter(lead=lead).exists()


@db
def test_mixed_batch_returns_earlier_enriched_leads_with_the_new_ones(tenant, domains, settings):
    settings.AI_PROVIDER_URL = ""
    earlier, fresh = (lead_make(tenant, f"a@{domain}") for domain in domains(2))
    leads_enrich(lead_ids([earlier]))

    assert leads_enrich(lead_ids([fresh, earlier, fresh])).enriched == lead_ids([fresh, earlier])


def test_http_provider_error_status_is_a_provider_error(ai):
    provider = HttpProvider(ai.url, "m", "", 2.0)
    assert provider.enrich_domains(["a.example"]) == {"a.example": company_profile("a.example")}

    ai.configure("ai", failure_rate=1.0)
    with pytest.raises(ProviderError, match="HTTP 503"):
        provider.enrich_domains(["a.example"])


def _chat(content) -> bytes:
    return json.dumps({"choices": [{"message": {"content": content}}]}).encode()


GOOD = {"industry": "retail", "company_size": "11-50", "summary": "Shoes."}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>oops</html>", "not a chat completion"),
        (json.dumps({"choices": []}).encode(), "not a chat completion"),
        (_chat(None), "no text content"),
        (_chat("Sure! Here are the profiles."), "not JSON with 'results'"),
        (_chat(json.dumps({"profiles": {}})), "not JSON with 'results'"),
        (_chat(json.dumps({"results": []})), "not an object"),
        (b"[" * 100_000, "not a chat completion"),  # nested past the parser's depth
        (_chat("[" * 100_000), "not JSON with 'results'"),
    ],
)
def test_reply_outside_the_contract_is_a_provider_error(body, reason):
    with pytest.raises(ProviderError, match=reason):
        chat_reply_profiles(body, ["a.example"])


@pytest.mark.parametrize(
    "profile",
    [
        None,
        {**GOOD, "industry": 3},
        {**GOOD, "summary": "x" * 1001},
        {**GOOD, "summary": "nul \x00 inside"},
        {**GOOD, "summary": "lone \ud800 surrogate"},
        "not an object",
    ],
)
def test_a_domain_left_out_or_badly_profiled_is_missing_alone(profile):
    results = {"b.example": GOOD} if profile is None else {"a.example": profile, "b.example": GOOD}

    profiles = chat_reply_profiles(
        _chat(json.dumps({"results": results})), ["a.example", "b.example"]
    )

    assert profiles == {"b.example": GOOD}


def test_reply_in_a_code_fence_with_other_case_keys_is_accepted():
    content = "```json\n" + json.dumps({"results": {"A.Example": GOOD}}) + "\n```"

    assert chat_reply_profiles(_chat(content), ["a.example"]) == {"a.example": GOOD}


def test_http_provider_accepts_a_base_url_with_or_without_v1(ai):
    for base in (ai.url, ai.url + "/", ai.url + "/v1", ai.url + "/v1/"):
        assert HttpProvider(base, "m", "", 2.0).endpoint == ai.url + "/v1/chat/completions"


def test_unreachable_provider_is_a_provider_error():
    provider = HttpProvider("http://127.0.0.1:9", "m", "", 0.5)

    with pytest.raises(ProviderError, match="unreachable"):
        provider.enrich_domains(["a.example"])


def test_provider_from_settings_is_local_without_url_and_http_with_one(settings):
    settings.AI_PROVIDER_URL = ""
    assert isinstance(provider_from_settings(), LocalProvider)
    settings.AI_PROVIDER_URL = "http://127.0.0.1:1"
    assert isinstance(provider_from_settings(), HttpProvider)


def test_local_rules_read_the_domain():
    assert domain_profile_local("mit.edu")["industry"] == "education"
    assert domain_profile_local("ox.ac.uk")["industry"] == "education"
    assert domain_profile_local("nhs.gov.uk")["industry"] == "government"
    assert domain_profile_local("acmebank.com")["industry"] == "finance"
    assert domain_profile_local("startup.io")["industry"] == "software"
    assert domain_profile_local("hotmail.com")["industry"] == "consumer"
    assert domain_profile_local("nodot")["industry"] == "unknown"
    assert domain_profile_local("acme.com") == domain_profile_local("acme.com")
