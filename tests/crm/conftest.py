"""Pool C's fixtures: tenants whose CRM is the HTTP double (one for the module)."""

import pytest

from leadflow.redis_conn import get_redis
from tests.doubles.client import http_double
from tests.factories import tenant_make


def breaker_forget(tenant_id: int) -> None:
    # CircuitRedisStorage puts its namespace ("lf:crm:<id>") before "pybreaker".
    redis = get_redis()
    for key in redis.scan_iter(f"lf:crm:{tenant_id}:pybreaker:*"):
        redis.delete(key)


@pytest.fixture(scope="module")
def crm_double():
    """A double of the module's own: the live stack's (`double`) is the session's."""
    with http_double(max_seconds=900) as running:
        yield running


@pytest.fixture
def crm(crm_double):
    """The double as a healthy CRM with no calls recorded."""
    crm_double.reset()
    return crm_double


@pytest.fixture
def crm_tenant():
    """Tenants with a closed breaker: ids restart with each test database, Redis keys do not."""
    created: list[int] = []

    def make(**fields):
        tenant, _ = tenant_make("crm", **fields)
        created.append(tenant.id)
        breaker_forget(tenant.id)
        return tenant

    yield make
    for tenant_id in created:
        breaker_forget(tenant_id)


@pytest.fixture
def webhook_tenant(crm_tenant, crm):
    return crm_tenant(crm_webhook_url=f"{crm.url}/crm/hook")
