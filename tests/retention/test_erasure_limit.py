"""Erasures are limited per tenant (a token bucket in Redis): past the burst a tenant gets 429
naming `erasure_rate` with an honest Retry-After, and nothing more is erased; another tenant's
erasures go on; a refused request for a bad address is a 400 that takes no token. With Redis
down an erasure is a 503 with Retry-After, and nothing is erased."""

import uuid

import pytest
from django.test import Client

from apps.leads.models import Lead
from tests.factories import lead_make
from tests.live.api import auth
from tests.live.stack import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def _erase(key: str, email: str):
    return Client().delete(f"/api/v1/leads?email={email}", headers=auth(key))


def test_past_its_burst_a_tenant_waits_and_others_do_not(settings, make_tenant):
    settings.ERASURE_BURST = 3
    settings.ERASURE_RATE_PER_SECOND = 0.1  # a token every 10 s
    (tenant, key), (_, other_key) = make_tenant("erase-limit"), make_tenant("erase-limit-other")
    for _ in range(2):
        assert _erase(key, "not-an-address").status_code == 400  # takes no token
    for _ in range(3):
        assert _erase(key, f"{uuid.uuid4().hex[:8]}@example.com").status_code == 200
    kept = lead_make(tenant, email="ada@example.com")
    refused = _erase(key, "ada@example.com")
    assert refused.status_code == 429, refused.content
    body = refused.json()
    assert body["error"] == "rate_limited" and body["limit"] == "erasure_rate"
    assert 1 <= int(refused["Retry-After"]) <= 10 and body["retry_after"] == int(
        refused["Retry-After"]
    )
    assert Lead.objects.filter(pk=kept.pk).exists()  # refused: nothing erased
    assert _erase(other_key, "ada@example.com").status_code == 200


def test_with_redis_down_an_erasure_is_a_503_and_erases_nothing(settings, make_tenant):
    tenant, key = make_tenant("erase-redis-down")
    kept = lead_make(tenant, email="ada@example.com")
    settings.REDIS_URL = settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{free_port()}/0"
    refused = _erase(key, "ada@example.com")
    assert refused.status_code == 503, refused.content
    assert refused.json()["error"] == "unavailable" and int(refused["Retry-After"]) >= 1
    assert Lead.objects.filter(pk=kept.pk).exists()
