"""/healthz, /readyz and /scaling/backlog (Django's test client and over HTTP against the live
stack), the admin's static files under gunicorn, and the pools' worker liveness probe.

Django's test client (tests/conftest.py) is on the operator listener, where /readyz names each
failed check's error; the public /readyz says only which (tests/security)."""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from leadflow.queues import POOLS, TIERS
from leadflow.redis_conn import get_redis
from tests.live.stack import ROOT, free_port


@pytest.fixture
def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def test_healthz_answers_without_an_api_key(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


@pytest.fixture
def database_state(monkeypatch):
    """This process's view of PostgreSQL, fresh for the test and put back after it."""
    from apps.tenants import cache

    monkeypatch.setattr(cache, "_database", cache.DatabaseState())
    return cache


@pytest.mark.django_db
def test_readyz_is_ready_when_redis_and_postgres_answer(client, database_state):
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ready" and body["failed"] == []
    assert body["checks"] == {"redis": "ok", "postgres": "ok"}


@pytest.mark.django_db
def test_readyz_names_redis_when_redis_is_unreachable(client, settings, closed_port):
    settings.REDIS_URL = settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port}/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["redis"]
    assert body["checks"]["redis"].startswith("ConnectionError")
    assert body["checks"]["postgres"] == "ok"


@pytest.mark.django_db
def test_readyz_reports_a_separate_broker_without_failing(client, settings, closed_port):
    # The API never publishes to the broker: the intake goes on filling the inboxes.
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{closed_port}/0"
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["failed"] == ["broker"]


@pytest.fixture
def postgres_unreachable(transactional_db, closed_port, database_state):
    """This process's connection to PostgreSQL closed, and no server where it would reconnect."""
    from django.db import connection

    saved = {name: connection.settings_dict[name] for name in ("HOST", "PORT")}
    connection.close()
    connection.settings_dict.update(HOST="127.0.0.1", PORT=str(closed_port))
    try:
        yield database_state
    finally:
        connection.close()
        connection.settings_dict.update(saved)  # the next query reconnects to the real server


def test_readyz_is_unavailable_without_postgres_when_no_key_could_be_served(
    client, postgres_unreachable
):
    postgres_unreachable.clear()
    get_redis().delete(postgres_unreachable.TENANTS_AUTH_KEY)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["postgres"]
    assert body["checks"]["postgres"].startswith("OperationalError")


def test_readyz_stays_ready_without_postgres_while_known_keys_can_be_served(
    client, postgres_unreachable
):
    cache = postgres_unreachable
    cache.clear()
    auth = cache.TenantAuth(1, "acme", 10, None, 10, 1.0, 1000)
    cache._entries["digest"] = (auth, 0.0, time.time())  # loaded a moment ago
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["failed"] == ["postgres"]
    cache.clear()


def test_health_endpoints_refuse_other_methods(client):
    assert client.post("/healthz").status_code == 405
    assert client.post("/readyz").status_code == 405


def test_backlog_endpoint_reports_the_controllers_figures_per_pool_and_tier(client):
    from leadflow.redis_keys import CONTROL_SCALING_KEY, CONTROL_STATE_KEY

    redis = get_redis()
    saved = redis.hgetall(CONTROL_SCALING_KEY), redis.hget(CONTROL_STATE_KEY, "stop_scaling")
    try:
        redis.delete(CONTROL_SCALING_KEY)
        redis.hset(
            CONTROL_SCALING_KEY,
            mapping={
                "a.critical": 3,
                "a.normal": 40,
                "b.normal": 2,
                "forecast.a.normal": 900,
                "replicas.a": 1,
            },
        )
        redis.hset(CONTROL_STATE_KEY, "stop_scaling", "True")
        response = client.get("/scaling/backlog")
    finally:
        redis.delete(CONTROL_SCALING_KEY)
        if saved[0]:
            redis.hset(CONTROL_SCALING_KEY, mapping=saved[0])
        redis.hset(CONTROL_STATE_KEY, "stop_scaling", saved[1] or "False")
    assert response.status_code == 200
    assert response.json() == {
        "a": {"critical": 3, "normal": 40, "low": 0},
        "b": {"critical": 0, "normal": 2, "low": 0},
        "c": {"critical": 0, "normal": 0, "low": 0},
        "forecast": {
            "a": {"critical": 0, "normal": 900, "low": 0},
            "b": {"critical": 0, "normal": 0, "low": 0},
            "c": {"critical": 0, "normal": 0, "low": 0},
        },
        "replicas": {"a": 1, "b": 0, "c": 0},
        "frozen": True,
    }


def test_responses_carry_a_request_id(client):
    mine = client.get("/healthz", HTTP_X_REQUEST_ID="req-123")
    assert mine.headers["X-Request-Id"] == "req-123"
    made_up = client.get("/healthz", HTTP_X_REQUEST_ID="not ok\n")
    assert made_up.headers["X-Request-Id"] not in ("", "not ok\n")


# --- over HTTP, gunicorn with DEBUG off, as deployed ---
# These are marked for the database so that pytest-django creates the test database, which the
# live stack runs on, even when no other selected test needs it.
live = pytest.mark.django_db(transaction=True)


@live
def test_health_endpoints_over_http(live_stack, operator):
    with httpx.Client(base_url=live_stack.api_url, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "alive"}
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {
            "status": "ready",
            "failed": [],
            "checks": {"redis": "ok", "postgres": "ok"},
        }
        backlog = operator.get("/scaling/backlog")
        assert backlog.status_code == 200
        assert set(backlog.json()) == {"a", "b", "c", "forecast", "replicas", "frozen"}
        assert set(backlog.json()["a"]) == set(TIERS)


@live
def test_admin_static_files_are_served_by_gunicorn_with_debug_off(live_stack):
    assert os.environ.get("DJANGO_DEBUG", "false").lower() in ("", "0", "false", "no", "off")
    with httpx.Client(base_url=live_stack.operator_url, timeout=10) as http:
        css = http.get("/static/admin/css/base.css", headers={"Accept-Encoding": "identity"})
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert "body" in css.text
        login = http.get("/admin/login/")
        assert login.status_code == 200 and "/static/admin/css/base.css" in login.text


# --- the worker liveness probe, against the live stack's pools ---


def probe(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "apps.health.worker_probe", *args],
        cwd=ROOT,
        env=env or os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@live
@pytest.mark.parametrize("pool", POOLS)
def test_worker_probe_passes_for_a_running_pool_worker(live_stack, pool):
    # tests/live/stack.py names the workers pool-<pool>-<test runner pid>@%h
    node = f"pool-{pool}-{os.getpid()}@{socket.gethostname()}"
    result = probe(pool, "--node", node, env=live_stack.env)
    assert result.returncode == 0, result.stderr
    assert f"{node} answered" in result.stdout


@live
def test_worker_probe_fails_when_no_worker_answers(live_stack):
    result = probe("a", "--node", "pool-a@no-such-host", "--timeout", "1", env=live_stack.env)
    assert result.returncode == 1
    assert "did not answer" in result.stderr


@live
def test_worker_probe_defaults_to_this_hosts_procfile_node_name(live_stack):
    result = probe("b", "--timeout", "1", env=live_stack.env)
    assert result.returncode == 1  # the live stack's workers have their own names
    assert f"pool-b@{socket.gethostname()} did not answer" in result.stderr


def test_worker_probe_passes_when_the_broker_is_down(closed_port):
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{closed_port}/0"}
    env.pop("CELERY_BROKER_URL", None)
    result = probe("a", "--timeout", "1", env=env)
    assert result.returncode == 0
    assert "broker unreachable" in result.stdout


@live
def test_pool_workers_log_json_lines(live_stack):
    lines = live_stack.processes["pool-a"].log().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert any(record["event"].endswith("ready.") for record in records)
    assert all({"event", "level", "logger", "timestamp"} <= set(record) for record in records)
