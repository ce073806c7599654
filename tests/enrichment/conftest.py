"""Pool B's fixtures: the HTTP double as the AI provider (one for the module), a tenant, fresh
domains, and the shared AI breaker closed around each test."""

import uuid

import pytest

from leadflow.redis_conn import get_redis
from leadflow.redis_keys import ENRICH_DOMAIN_CACHE_PREFIX
from tests.doubles.client import http_double
from tests.factories import tenant_make

BREAKER_KEYS = "lf:ai:pybreaker:*"  # CircuitRedisStorage puts its namespace before "pybreaker"


def _breaker_forget() -> None:
    redis = get_redis()
    for key in redis.scan_iter(BREAKER_KEYS):
        redis.delete(key)


@pytest.fixture(autouse=True)
def ai_breaker_closed():
    _breaker_forget()
    yield
    _breaker_forget()


@pytest.fixture(scope="module")
def ai_double():
    """A double of the module's own: the live stack's (`double`) is the session's."""
    with http_double(max_seconds=900) as running:
        yield running


@pytest.fixture
def ai(ai_double, settings):
    """The double as the configured AI provider, behaving normally, with no calls recorded."""
    ai_double.reset()
    settings.AI_PROVIDER_URL = ai_double.url
    settings.AI_PROVIDER_API_KEY = "sk-test"
    settings.AI_PROVIDER_TIMEOUT_SECONDS = 2.0
    return ai_double


@pytest.fixture
def tenant():
    created, _ = tenant_make("enrich")
    return created


@pytest.fixture
def domains():
    """Company domains no other test (or earlier run) has cached."""
    created: list[str] = []

    def make(count: int = 1) -> list[str]:
        fresh = [f"co{uuid.uuid4().hex[:12]}.example" for _ in range(count)]
        created.extend(fresh)
        return fresh

    yield make
    if created:
        get_redis().delete(*[ENRICH_DOMAIN_CACHE_PREFIX + domain for domain in created])
