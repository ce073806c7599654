"""Authentication's cheap refusals, in this process against the real PostgreSQL and Redis (the
queries counted by Django): garbage keys cost no SQL, unknown ones pass the per-IP limit before
any query, a valid key's lookup gives its token back; the client address behind proxies is the
nth X-Forwarded-For entry from the right, whatever the client writes to its left."""

import secrets
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.intake.authentication import client_ip, tenant_authenticate
from apps.intake.errors import ApiError
from apps.tenants import cache
from apps.tenants.keys import api_key_generate
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import ip_bucket_key
from tests.factories import tenant_make

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_tenant_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def ip():
    """An address of the test's own, its bucket empty of history."""
    address = f"198.18.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
    yield address
    get_redis().delete(ip_bucket_key(None, address))


def refused(key: str, ip: str) -> ApiError:
    with pytest.raises(ApiError) as error:
        tenant_authenticate(f"Bearer {key}", ip)
    return error.value


def garbage() -> list[str]:
    return [
        uuid.uuid4().hex,
        "lf_not-a-key",
        "lf_live_" + secrets.token_hex(19),  # the prefix, the length, no valid checksum
        api_key_generate()[:-1] + "!",
        "Bearer",
        "x" * 5000,
    ]


def test_garbage_keys_are_refused_without_sql(settings, ip):
    settings.ANONYMOUS_IP_BURST = 1000
    with CaptureQueriesContext(connection) as queries:
        for _ in range(20):
            for key in garbage():
                assert refused(key, ip).status_code == 401
    assert len(queries) == 0


def test_an_unknown_well_formed_key_is_looked_up_once_then_remembered(settings, ip):
    settings.ANONYMOUS_IP_BURST = 1000
    unknown = api_key_generate()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(50):
            assert refused(unknown, ip).detail == "unknown or revoked API key"
    assert len(queries) == 1


def test_the_per_ip_limit_runs_before_any_lookup(settings, ip):
    settings.ANONYMOUS_IP_BURST = 3
    settings.ANONYMOUS_IP_RATE = 0.001
    with CaptureQueriesContext(connection) as queries:
        answers = [refused(api_key_generate(), ip) for _ in range(10)]
    assert [a.status_code for a in answers] == [401] * 3 + [429] * 7
    assert answers[-1].extra["limit"] == "ip_rate"
    assert len(queries) == 3  # one lookup per token; none once the address is refused


def test_a_valid_keys_lookup_gives_its_token_back(settings, ip):
    settings.ANONYMOUS_IP_BURST = 2
    settings.ANONYMOUS_IP_RATE = 0.001
    tenants = [tenant_make("acme") for _ in range(5)]
    for _, key in tenants:  # five lookups from one address, more than its burst
        assert tenant_authenticate(f"Bearer {key}", ip).tenant_name.startswith("acme")
    # the bucket is still full: two unknown keys are looked up and refused with 401
    assert [refused(api_key_generate(), ip).status_code for _ in range(3)] == [401, 401, 429]


def test_a_revoked_keys_refusal_is_401_not_a_lookup_per_request(settings, ip):
    settings.ANONYMOUS_IP_BURST = 1000
    _, key = tenant_make("acme")
    cache.clear()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(20):
            tenant_authenticate(f"Bearer {key}", ip)
    assert len(queries) == 1


# --- the client's address ---

CLIENT, PROXY, EDGE = "198.51.100.7", "10.0.0.5", "10.0.0.9"


@pytest.mark.parametrize(
    ("proxies", "forwarded", "expected"),
    [
        (0, "6.6.6.6", PROXY),  # no proxy trusted: the TCP peer, whatever the header says
        (1, CLIENT, CLIENT),
        (1, f"6.6.6.6, {CLIENT}", CLIENT),  # a forged leftmost entry changes nothing
        (1, f"6.6.6.6,7.7.7.7 , {CLIENT}", CLIENT),
        (2, f"6.6.6.6, {CLIENT}, {EDGE}", CLIENT),  # two proxies: the second from the right
        (2, CLIENT, PROXY),  # fewer entries than proxies: not through them all
        (1, "", PROXY),
        (1, "not-an-address", PROXY),
        (1, "2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_ip_is_the_nth_forwarded_entry_from_the_right(
    settings, proxies, forwarded, expected
):
    settings.TRUSTED_PROXIES = proxies
    meta = {"REMOTE_ADDR": PROXY, "HTTP_X_FORWARDED_FOR": forwarded}
    assert client_ip(meta) == expected
