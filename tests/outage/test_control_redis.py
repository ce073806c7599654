"""The control process and its Redis: killed and restarted, or full (maxmemory, noeviction),
Redis never makes control exit; control says so once per outage, and leads flow again within
seconds of Redis answering. Real processes (the API, control) on a redis-server and a database
of the test's own (tests/control/outage_services.py), restarted if they exit, as an
orchestrator would; the restarts of control are counted and must be 0."""

import time

import pytest
import redis

from tests.control.outage_services import (
    LEASE_SECONDS,
    post_leads,
    private_database,
    process_env,
    start_api,
    start_control,
    tenant_key,
    wait_dispatched,
)
from tests.doubles.redis_server import PrivateRedis

DEPENDENCY = "Redis"


@pytest.fixture(scope="module")
def database_url():
    with private_database() as url:
        yield url


@pytest.fixture
def platform(database_url, tmp_path):
    """A private Redis, the API and control on it; stopped after the test."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    env = process_env(database_url, server.url)
    started = []
    try:
        api, api_url = start_api(env, tmp_path)
        started.append(api)
        control = start_control(env, tmp_path)
        started.append(control)
        control.wait_for("control: active")
        yield server, api_url, tenant_key(env), control
    finally:
        for process in started:
            process.stop()
        server.kill()


def test_control_outlives_a_redis_restart_and_dispatches_after_it(platform):
    server, api_url, key, control = platform
    post_leads(api_url, key, 5)
    wait_dispatched(server.client(), inflight=5)

    server.kill()
    time.sleep(LEASE_SECONDS + 3)  # past the lease: the leadership lapses with Redis
    assert control.restarts == 0, control.log()[-4000:]
    server.start()  # the same port and AOF: what was in flight is still there
    started_at = time.monotonic()

    post_leads(api_url, key, 5)
    wait_dispatched(server.client(), inflight=10, timeout=60)
    print(f"leads posted after Redis came back dispatched {time.monotonic() - started_at:.1f} s on")
    assert control.restarts == 0, control.log()[-4000:]
    control.wait_for(f"control: {DEPENDENCY} available again", timeout=30)
    log = control.log()
    assert log.count(f"control: {DEPENDENCY} unavailable") == 1, log[-4000:]
    assert log.count(f"control: {DEPENDENCY} available again") == 1, log[-4000:]


def test_control_stays_up_while_redis_refuses_writes(platform):
    server, api_url, key, control = platform
    post_leads(api_url, key, 5)
    wait_dispatched(server.client(), inflight=5)

    client = server.client()
    fillers = [f"filler:{n}" for n in range(50)]
    for filler in fillers:
        client.set(filler, b"x" * 100_000)
    # Well over the limit, as a full production Redis: every write is refused (OOM).
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) // 2)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("probe", "x")
    time.sleep(LEASE_SECONDS + 3)
    assert control.restarts == 0, control.log()[-4000:]

    client.config_set("maxmemory", 0)
    client.delete(*fillers)
    post_leads(api_url, key, 5)
    wait_dispatched(client, inflight=10, timeout=60)
    assert control.restarts == 0, control.log()[-4000:]
    control.wait_for(f"control: {DEPENDENCY} available again", timeout=30)
    log = control.log()
    assert log.count(f"control: {DEPENDENCY} unavailable") == 1, log[-4000:]
    assert log.count(f"control: {DEPENDENCY} available again") == 1, log[-4000:]
