"""Loaded with `-p tests.session_env` (pyproject addopts), before pytest-django reads settings.

The tests need real PostgreSQL and Redis (DATABASE_URL, REDIS_URL; `make test` sets both).
They use their own Redis database (LEADFLOW_TEST_REDIS_DB, default 15) of the given server,
flushed when the session starts, so a running `make run` on the same server is not disturbed.
"""

import os
import secrets
from urllib.parse import urlsplit, urlunsplit

import pytest

if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
    raise pytest.UsageError(
        "run the tests with `make test`, or set DATABASE_URL and REDIS_URL to real servers"
    )

TEST_REDIS_DB = os.environ.get("LEADFLOW_TEST_REDIS_DB", "15")
os.environ["REDIS_URL"] = urlunsplit(
    urlsplit(os.environ["REDIS_URL"])._replace(path=f"/{TEST_REDIS_DB}")
)
os.environ.pop("CELERY_BROKER_URL", None)  # the broker follows REDIS_URL in tests
if os.environ.get("LEADFLOW_REDIS_CLUSTER_URL"):
    # The inboxes on a Redis Cluster (make test-cluster, tests/doubles/redis_server.py): it has
    # only db 0, all of it the tests', flushed on every master (the rest is on REDIS_URL).
    from redis.cluster import RedisCluster

    _cluster = RedisCluster.from_url(os.environ["LEADFLOW_REDIS_CLUSTER_URL"])
    _cluster.flushdb()
    _cluster.close()
# The tests run on whatever Redis they are given, CI's with appendonly off: its durability is
# logged, not a reason for the live stack's processes to refuse to start (leadflow/redis_checks.py).
os.environ.setdefault("LEADFLOW_REDIS_CHECKS", "warn")
# The HTTP doubles listen on http://127.0.0.1: the test process (tenants saved with their URLs,
# in-process deliveries) runs the SSRF guard with the live stack's settings (tests/conftest.py).
os.environ.setdefault("LEADFLOW_OUTBOUND_ALLOW_HTTP", "true")
os.environ.setdefault("LEADFLOW_OUTBOUND_ALLOWED_HOSTS", "127.0.0.1")
# The tests run production settings (not LEADFLOW_DEV), which need a real secret key: one per
# session, shared by the live stack's processes (they inherit this environment).
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
# Keys' last-used times reach PostgreSQL within a second or two (apps/tenants/usage.py), in the
# test process and the live stack alike (one writer at a time, whichever takes the lock).
os.environ.setdefault("LEADFLOW_API_KEY_LAST_USED_WRITE_SECONDS", "1")
