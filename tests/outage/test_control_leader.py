"""One leader, always: two control processes on one Redis. A leader whose loop is held up
longer than its lease (a PostgreSQL lock holds its policy read) stays the only leader; a leader
frozen longer than its lease (SIGSTOP) finds another in its place when it wakes, and stands
by without acting. Real processes on a database and a redis-server of the test's own
(tests/control/outage_services.py)."""

import signal
import threading
import time

import psycopg
import pytest

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

ACTIVE = "control: active"
STANDING_BY = "control: waiting to become the active instance"
STEPPED_DOWN = "control: no longer the active instance"


@pytest.fixture(scope="module")
def database_url():
    with private_database() as url:
        yield url


@pytest.fixture
def two_controls(database_url, tmp_path):
    """The API and two control processes on a private Redis; `first` leads, `second` stands by."""
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    env = process_env(database_url, server.url)
    started = []
    try:
        api, api_url = start_api(env, tmp_path)
        started.append(api)
        first = start_control(env, tmp_path, "control-1")
        started.append(first)
        first.wait_for(ACTIVE)
        second = start_control(env, tmp_path, "control-2")
        started.append(second)
        second.wait_for(STANDING_BY)
        yield server, database_url, api_url, tenant_key(env), first, second
    finally:
        for process in started:
            process.stop()
        server.kill()


def policy_locked(database_url: str, seconds: float, locked: threading.Event) -> None:
    """Hold the policy table, as a migration would: every read of it waits."""
    with psycopg.connect(database_url) as conn:
        conn.execute("LOCK TABLE control_policy IN ACCESS EXCLUSIVE MODE")
        locked.set()
        time.sleep(seconds)


def test_a_leader_held_up_longer_than_its_lease_stays_the_only_leader(two_controls):
    server, database_url, api_url, key, first, second = two_controls
    locked = threading.Event()
    holder = threading.Thread(
        target=policy_locked, args=(database_url, LEASE_SECONDS + 4, locked), daemon=True
    )
    holder.start()
    assert locked.wait(30)
    # Leads keep moving meanwhile: the dispatcher does not wait for PostgreSQL.
    post_leads(api_url, key, 5)
    wait_dispatched(server.client(), inflight=5, timeout=60)
    holder.join(60)
    time.sleep(3)

    assert ACTIVE not in second.log(), second.log()[-4000:]
    assert STEPPED_DOWN not in first.log(), first.log()[-4000:]
    post_leads(api_url, key, 5)
    wait_dispatched(server.client(), inflight=10)
    assert first.restarts == second.restarts == 0


def test_a_leader_frozen_past_its_lease_wakes_up_a_standby(two_controls):
    server, _, api_url, key, first, second = two_controls
    first.signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        second.wait_for(ACTIVE, timeout=LEASE_SECONDS + 30)
        print(f"the standby led {time.monotonic() - frozen_at:.1f} s after the leader froze")
        post_leads(api_url, key, 5)
        wait_dispatched(server.client(), inflight=5)
    finally:
        first.signal(signal.SIGCONT)
    first.wait_for(STEPPED_DOWN, timeout=30)
    woke_at = len(first.log())

    post_leads(api_url, key, 5)
    wait_dispatched(server.client(), inflight=10)
    time.sleep(LEASE_SECONDS)
    assert ACTIVE not in first.log()[woke_at:], first.log()[-4000:]
    assert STEPPED_DOWN not in second.log(), second.log()[-4000:]
    assert first.restarts == second.restarts == 0
