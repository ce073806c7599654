"""Fixtures shared by the tests: a clean Redis test database, the live platform, tenants."""

import os
import random
import time
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from django.conf import settings
from django.db import OperationalError

from leadflow.redis_conn import get_redis
from tests.doubles.client import http_double
from tests.live.stack import Stack, free_port


@pytest.fixture(scope="session", autouse=True)
def _flush_retries_deadlocks():
    """Transactional tests end by truncating every table while the live stack may still be
    writing (pools finishing a test's leads, the controller's tick). PostgreSQL can then pick
    the TRUNCATE as a deadlock's victim: try it again, the workers' transactions are short."""
    from django.db.backends.postgresql.operations import DatabaseOperations

    flush = DatabaseOperations.execute_sql_flush

    def execute_sql_flush(self, sql_list):
        for attempt in range(5):
            try:
                return flush(self, sql_list)
            except OperationalError as error:
                if not isinstance(error.__cause__, psycopg.errors.DeadlockDetected) or attempt == 4:
                    raise
                time.sleep(0.2)

    DatabaseOperations.execute_sql_flush = execute_sql_flush
    yield
    DatabaseOperations.execute_sql_flush = flush


@pytest.fixture(scope="session", autouse=True)
def _clean_redis():
    get_redis().flushdb()


@pytest.fixture(scope="session")
def double():
    """The HTTP server that plays the AI provider and the CRMs."""
    with http_double() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_double_and_breakers(request):
    if "double" in request.fixturenames:
        request.getfixturevalue("double").reset()
    client = get_redis()
    for key in client.scan_iter("lf:*:pybreaker:*"):
        client.delete(key)


@pytest.fixture(scope="session")
def live_stack(django_db_setup, django_db_blocker, double, tmp_path_factory):
    """gunicorn, pools A, B, C and the control process, on the test database."""
    test_db = settings.DATABASES["default"]["NAME"]
    database_url = urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{test_db}"))
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.REDIS_URL,
        "LEADFLOW_AI_URL": double.url,
        # The doubles (AI provider, CRMs) listen on http://127.0.0.1: dev settings for the SSRF
        # guard, with that one host named (so localhost, 127.0.0.2, 10.x ... stay refused).
        "LEADFLOW_OUTBOUND_ALLOW_HTTP": "true",
        "LEADFLOW_OUTBOUND_ALLOWED_HOSTS": "127.0.0.1",
        "LEADFLOW_AI_TIMEOUT_SECONDS": "1",
        "LEADFLOW_BREAKER_RESET_SECONDS": "3",
        "LEADFLOW_CRM_TIMEOUT_SECONDS": "2",
        # Short, so a batch whose worker was SIGKILLed comes back within the test.
        "CELERY_VISIBILITY_TIMEOUT": "20",
        # Leases renewed every second, so a test's own worker with a short visibility timeout
        # (tests/deploy/test_leases.py) never hands out a batch this stack is still running.
        "LEADFLOW_LEASE_RENEW_SECONDS": "1",
        # A dispatched batch not stored within 20 s is published again: over the task time
        # limit, as the system checks require (leadflow/checks.py).
        "CELERY_TASK_SOFT_TIME_LIMIT": "12",
        "CELERY_TASK_TIME_LIMIT": "15",
        "LEADFLOW_INFLIGHT_REPUBLISH_SECONDS": "20",
        # A lost message's leads come back as orphans (30 s, the default); the stalled-lead
        # backstop is left far enough out that a test can tell the two apart.
        "LEADFLOW_STALLED_LEAD_SECONDS": "600",
        # Degraded enrichments are retried from the ledger after this long.
        "LEADFLOW_BACKFILL_RETRY_SECONDS": "5",
        # Tests act as clients from many addresses through X-Forwarded-For (see `api`), as
        # behind one proxy: its rightmost entry is the address.
        "LEADFLOW_TRUSTED_PROXIES": "1",
        # The API's operator listener (/admin, /metrics, /scaling/backlog): live_stack.operator_url.
        "LEADFLOW_OPERATOR_PORT": str(free_port()),
        # Requests without a valid key: a burst of 5 per address, then 1/s (boundary tests).
        "LEADFLOW_ANONYMOUS_IP_BURST": "5",
        "LEADFLOW_ANONYMOUS_IP_RATE": "1",
        "PYTHONUNBUFFERED": "1",
        # Metrics servers on ports of their own (tests/ops), and tenant labels that follow the
        # ranking within a second or two.
        "LEADFLOW_CONTROL_METRICS_PORT": str(free_port()),
        "LEADFLOW_POOL_A_METRICS_PORT": str(free_port()),
        "LEADFLOW_POOL_B_METRICS_PORT": str(free_port()),
        "LEADFLOW_POOL_C_METRICS_PORT": str(free_port()),
        "LEADFLOW_METRICS_TENANT_REFRESH_SECONDS": "1",
        # The retention job runs once, as the control process starts, and not again during the
        # session: tests/retention runs it by itself, on leads it ages on purpose.
        "LEADFLOW_RETENTION_INTERVAL_SECONDS": "86400",
        # The receipts' pipeline figures are written every second (tests/usage reads them).
        "LEADFLOW_RECEIPT_FLUSH_SECONDS": "1",
        "LEADFLOW_RECEIPT_DELIVERIES_SECONDS": "1",
    }
    stack = Stack(env=env, log_dir=tmp_path_factory.mktemp("stack-logs"))
    try:
        stack.start_all()
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture(scope="module")
def control_stopped(live_stack):
    """The control process is stopped for the module: inboxes, drain rates and the mode stay
    as the tests set them. It is started again afterwards (a new leader within ~5 s)."""
    live_stack.kill("control")
    try:
        yield live_stack
    finally:
        live_stack.restart("control")


@pytest.fixture
def make_tenant(transactional_db):
    """make(prefix, **fields): a tenant with an API key, (tenant, key) (tests/factories.py)."""
    from tests.factories import tenant_make

    return tenant_make


def operator_client():
    """Django's test client, its requests arriving on the operator listener."""
    from django.test import Client

    class OperatorClient(Client):
        def generic(self, *args, **extra):
            extra.setdefault("SERVER_PORT", str(settings.OPERATOR_PORT))
            return super().generic(*args, **extra)

    return OperatorClient()


@pytest.fixture
def client():
    """Django's test client, on the operator listener, which serves every URL (the public one
    serves only the API and the probes: apps/health/operator.py; tests/security checks it)."""
    return operator_client()


@pytest.fixture
def admin_client(db, admin_user):
    client = operator_client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def operator(live_stack):
    """An HTTP client of the live API's operator listener."""
    with httpx.Client(base_url=live_stack.operator_url, timeout=10.0) as client:
        yield client


@pytest.fixture
def api(live_stack):
    """An HTTP client of the live API, from an address of its own (per-IP limits)."""
    address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
    with httpx.Client(
        base_url=live_stack.api_url, timeout=10.0, headers={"X-Forwarded-For": address}
    ) as client:
        yield client
