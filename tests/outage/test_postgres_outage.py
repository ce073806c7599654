"""PostgreSQL down, as the API's clients see it. An API process of the test's own reaches
PostgreSQL through a TCP proxy the test takes down (the shared server keeps running for
everyone else); the live stack's pools and control store what it accepts.

Known keys are still accepted (202), an unknown key and a status read get 503 with
Retry-After, readiness stays 200 and says PostgreSQL is down; when the database is back both
paths (the fast POST and Django's GET) work again with no restart, and every lead accepted
during the outage is stored.
"""

import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from apps.leads.models import Lead, LeadStatus
from apps.tenants.models import api_key_digest
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import TENANTS_AUTH_KEY
from tests.doubles.tcp_proxy import tcp_proxy
from tests.live.api import auth, wait_until
from tests.outage.api_process import api_server

pytestmark = pytest.mark.django_db(transaction=True)

CACHE_TTL_SECONDS = 1.0


@pytest.fixture(scope="module")
def proxy_and_api(live_stack, api_env, tmp_path_factory):
    database = urlsplit(api_env["DATABASE_URL"])
    with tcp_proxy(f"{database.hostname}:{database.port or 5432}") as proxy:
        proxied = database._replace(netloc=f"{database.username}@127.0.0.1:{proxy.port}")
        env = {
            **live_stack.env,
            "DATABASE_URL": urlunsplit(proxied),
            # Cached keys expire within the outage: what is served is the stale copy.
            "LEADFLOW_TENANT_CACHE_TTL_SECONDS": str(CACHE_TTL_SECONDS),
        }
        log = tmp_path_factory.mktemp("postgres-outage") / "api.log"
        with api_server(env, log) as api:
            yield proxy, api
            proxy.up()


@pytest.fixture
def http(proxy_and_api):
    proxy, api = proxy_and_api
    proxy.up()  # whatever an earlier test left
    with httpx.Client(base_url=api.url, timeout=10.0) as client:
        yield client


def a_lead() -> dict:
    return {"email": f"{uuid.uuid4().hex[:12]}@example.com", "name": "Ada", "priority": "critical"}


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["error"] == "unavailable"


def shared_copy_written(key: str) -> None:
    """Wait until an API process has left the key's copy in Redis (for workers that never
    loaded it) and the process caches have expired."""
    digest = api_key_digest(key)
    wait_until(lambda: get_redis().hexists(TENANTS_AUTH_KEY, digest), timeout=10)
    time.sleep(CACHE_TTL_SECONDS + 0.5)


def stored(trace_ids: list[str]) -> int:
    return Lead.objects.filter(trace_id__in=trace_ids).exclude(status=LeadStatus.FAILED).count()


def test_postgres_down_known_keys_are_accepted_and_both_paths_recover_without_restart(
    proxy_and_api, http, make_tenant
):
    proxy, api = proxy_and_api
    _, known = make_tenant()
    _, unknown = make_tenant()  # never used before the outage
    before = http.post("/api/v1/leads", json=a_lead(), headers=auth(known))
    assert before.status_code == 202, before.text
    trace_id = before.json()["trace_id"]
    wait_until(lambda: stored([trace_id]), timeout=60, message="the first lead never stored")
    assert http.get(f"/api/v1/leads/{trace_id}", headers=auth(known)).status_code == 200
    shared_copy_written(known)

    proxy.down()
    accepted = []
    for _ in range(10):  # both gunicorn workers, whichever loaded the key
        single = http.post("/api/v1/leads", json=a_lead(), headers=auth(known))
        assert single.status_code == 202, single.text
        batch = http.post(
            "/api/v1/leads/batch", json={"leads": [a_lead(), a_lead()]}, headers=auth(known)
        )
        assert batch.status_code == 202, batch.text
        accepted += [single.json()["trace_id"], *(r["trace_id"] for r in batch.json()["results"])]
        assert_unavailable(http.post("/api/v1/leads", json=a_lead(), headers=auth(unknown)))
        assert_unavailable(http.get(f"/api/v1/leads/{trace_id}", headers=auth(known)))
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "degraded"
    assert ready.json()["failed"] == ["postgres"]

    proxy.up()
    wait_until(
        lambda: http.post("/api/v1/leads", json=a_lead(), headers=auth(unknown)).status_code == 202,
        timeout=15,
        message="an unknown key still refused after PostgreSQL came back",
    )
    wait_until(
        lambda: all(
            http.get(f"/api/v1/leads/{t}", headers=auth(known)).status_code == 200
            for t in (trace_id, *accepted[:3])
        ),
        timeout=15,
        message="GET still failing after PostgreSQL came back",
    )
    assert http.get("/readyz").json()["status"] == "ready"
    wait_until(
        lambda: stored(accepted) == len(accepted),
        timeout=120,
        message="leads accepted during the outage not stored",
    )
    assert api.alive()


def test_readiness_reuses_the_processs_database_connection(proxy_and_api, http):
    proxy, _ = proxy_and_api
    # Each worker makes (or already has) its one connection; one that failed a moment ago
    # (an earlier test's outage) waits a little before trying again.
    wait_until(
        lambda: all(http.get("/readyz").json()["status"] == "ready" for _ in range(4)),
        timeout=10,
    )
    opened = proxy.connections_accepted()
    for _ in range(30):
        assert http.get("/readyz").json()["checks"]["postgres"] == "ok"
    assert proxy.connections_accepted() - opened <= 2  # at most a reconnect per worker


def test_a_worker_started_during_the_outage_serves_the_keys_its_siblings_knew(
    proxy_and_api, api_env, live_stack, make_tenant, tmp_path
):
    proxy, api = proxy_and_api
    _, known = make_tenant()
    with httpx.Client(base_url=api.url, timeout=10.0) as http:
        assert http.post("/api/v1/leads", json=a_lead(), headers=auth(known)).status_code == 202
    shared_copy_written(known)
    proxy.down()
    # A new API process (as after a restart or a recycled worker): nothing cached in it.
    env = {**live_stack.env, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{proxy.port}/x"}
    with (
        api_server(env, tmp_path / "api.log", workers=1) as fresh,
        httpx.Client(base_url=fresh.url, timeout=10.0) as http,
    ):
        response = http.post("/api/v1/leads", json=a_lead(), headers=auth(known))
        assert response.status_code == 202, response.text
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    proxy.up()
