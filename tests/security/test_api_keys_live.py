"""API keys against the live API: an expiring key works until its second and is then refused
naming it; a rotated key and its replacement both work for the overlap; a key's last use reaches
PostgreSQL within seconds, in a handful of writes however many requests (n_tup_upd, counted by
PostgreSQL)."""

import os
import time
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.conf import settings
from django.utils import timezone

from apps.tenants.models import ApiKey
from apps.tenants.services import api_key_create, api_key_rotate
from tests.live.api import auth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def a_lead() -> dict:
    return {"email": f"{time.monotonic_ns()}@analytical.io"}


def post(api, key: str):
    return api.post("/api/v1/leads", json=a_lead(), headers=auth(key))


def key_row_updates() -> int:
    name = settings.DATABASES["default"]["NAME"]
    url = urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{name}"))
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'tenants_apikey'"
        ).fetchone()
    return int(row[0])


def test_an_expiring_key_works_until_it_expires(api, make_tenant):
    tenant, _ = make_tenant("expiring")
    key = api_key_create(tenant, expires_at=timezone.now() + timedelta(seconds=3))
    assert post(api, key).status_code == 202
    wait_until(lambda: post(api, key).status_code == 401, timeout=10, message="still accepted")
    refused = post(api, key)
    assert refused.json()["error"] == "authentication_failed"
    assert "expired at" in refused.json()["detail"]


def test_rotation_keeps_both_keys_for_the_overlap(api, make_tenant):
    tenant, old_key = make_tenant("rotating")
    assert post(api, old_key).status_code == 202
    _, new_key = api_key_rotate(ApiKey.objects.get(tenant=tenant), timedelta(seconds=4))
    for _ in range(4):  # both gunicorn workers, whatever they had cached
        assert post(api, old_key).status_code == 202
        assert post(api, new_key).status_code == 202
    wait_until(lambda: post(api, old_key).status_code == 401, timeout=15, message="old key")
    assert post(api, new_key).status_code == 202


def test_last_used_reaches_postgres_without_a_write_per_request(api, make_tenant):
    tenant, key = make_tenant("last-used")
    row = ApiKey.objects.get(tenant=tenant)
    before = key_row_updates()
    started = time.monotonic()
    for _ in range(60):
        assert post(api, key).status_code == 202
    seconds = time.monotonic() - started

    def written():
        row.refresh_from_db()
        return row.last_used_at

    wait_until(written, timeout=15, message="last_used_at never written")
    assert abs((timezone.now() - row.last_used_at).total_seconds()) < 20
    time.sleep(11)  # every backend has reported its statistics (PGSTAT_IDLE_INTERVAL)
    writes = key_row_updates() - before
    print(f"\n60 requests in {seconds:.1f} s: {writes} writes of the key's row")
    # one write a second at most (LEADFLOW_API_KEY_LAST_USED_WRITE_SECONDS=1 in the tests)
    assert 1 <= writes <= seconds + 3
