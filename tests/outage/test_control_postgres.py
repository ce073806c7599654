"""The control process and its PostgreSQL: with its database connections cut (a TCP proxy
between control and PostgreSQL closes them and refuses new ones), control does not exit, says
so once, keeps dispatching (the dispatcher needs only Redis), keeps its mode machine running
(a change of mode during the outage is audited when the database is back, with its time), and
once PostgreSQL is reachable again reads it by itself within seconds: a policy change made then
is applied. Real processes on a database and a redis-server of the test's own
(tests/control/outage_services.py), restarted if they exit; the restarts of control are counted
and must be 0."""

import contextlib
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.control.outage_services import (
    database_url_for,
    post_leads,
    private_database,
    process_env,
    start_api,
    start_control,
    tenant_key,
    wait_dispatched,
)
from tests.doubles.redis_server import PrivateRedis
from tests.doubles.tcp_proxy import tcp_proxy
from tests.live.api import wait_until

OUTAGE_SECONDS = 20

DEPENDENCY = "PostgreSQL"


@pytest.fixture
def platform(tmp_path):
    """The API on the database directly; control through the proxy; one private Redis."""
    with contextlib.ExitStack() as stack, private_database() as database_url:
        server = PrivateRedis(tmp_path / "redis")
        server.start()
        parts = urlsplit(database_url)
        proxy = stack.enter_context(tcp_proxy(f"{parts.hostname}:{parts.port or 5432}"))
        name = parts.path.lstrip("/")
        started = []
        try:
            api, api_url = start_api(process_env(database_url, server.url), tmp_path)
            started.append(api)
            control_env = process_env(
                database_url_for(name, port=proxy.port),
                server.url,
                # The leads in flight (no pool A here) age: THIN ~10 s after the first post,
                # during the outage.
                LEADFLOW_MODE_THIN_ENTER_LAG="8",
                LEADFLOW_MODE_DWELL_SECONDS="2",
            )
            control = start_control(control_env, tmp_path)
            started.append(control)
            control.wait_for("control: active")
            yield server, proxy, database_url, api_url, tenant_key(control_env), control
        finally:
            for process in started:
                process.stop()
            server.kill()


def published(server, field: str) -> str:
    return (server.client().hget("lf:state", field) or b"").decode()


def test_control_keeps_dispatching_without_postgresql_and_recovers_by_itself(platform):
    server, proxy, database_url, api_url, key, control = platform
    post_leads(api_url, key, 5)
    wait_dispatched(server.client(), inflight=5)

    proxy.down()
    cut_at = time.monotonic()
    time.sleep(2)
    post_leads(api_url, key, 5)  # the API reads PostgreSQL directly: it accepts them
    wait_dispatched(server.client(), inflight=10, timeout=OUTAGE_SECONDS - 2)
    time.sleep(max(OUTAGE_SECONDS - (time.monotonic() - cut_at), 0))
    assert control.restarts == 0, control.log()[-4000:]

    assert published(server, "mode") == "thin", "the mode machine stopped with the database"

    proxy.up()
    restored_at = datetime.now(tz=UTC)
    # An operator's change, made once the database is back, reaches control by itself.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE control_policy SET stop_scaling = true, updated_by = 'test'")
    wait_until(
        lambda: published(server, "stop_scaling") == "True",
        timeout=30,
        message=f"the policy was not applied:\n{control.log()[-4000:]}",
    )
    print(f"policy applied {(datetime.now(tz=UTC) - restored_at).total_seconds():.1f} s after")

    # The change of mode made during the outage is audited (within a back-off of the database's
    # return), at the time it happened.
    def audited() -> list:
        with psycopg.connect(database_url, autocommit=True) as conn:
            query = "SELECT at FROM control_controlevent WHERE to_mode = 'thin'"
            return conn.execute(query).fetchall()

    rows = wait_until(audited, timeout=15, message="the change of mode was never audited")
    assert len(rows) == 1 and rows[0][0] < restored_at, rows
    post_leads(api_url, key, 5)
    wait_dispatched(server.client(), inflight=15)
    assert control.restarts == 0, control.log()[-4000:]
    control.wait_for(f"control: {DEPENDENCY} available again", timeout=30)
    log = control.log()
    assert log.count(f"control: {DEPENDENCY} unavailable") == 1, log[-4000:]
    assert log.count(f"control: {DEPENDENCY} available again") == 1, log[-4000:]
