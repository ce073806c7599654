"""Workers and their Redis (leadflow/broker.py): killed and restarted, or full (maxmemory,
noeviction), Redis never makes a worker exit, and the messages a worker held or took meanwhile
run once Redis is back or has room. Real workers (the Procfile's pool commands on the slow-task
app, tests/live/slow_tasks.py) on a redis-server of the test's own."""

import os
import time

import pytest
from kombu import Queue

from tests.deploy.processes import Starter, worker_argv
from tests.doubles.redis_server import PrivateRedis
from tests.live.slow_tasks import app, slow_batch, slow_batch_retried_on_refusal

QUEUE = "test.broker"
VISIBILITY_SECONDS = 4  # a message not renewed for this long is handed out again (+5 s restore)


@pytest.fixture
def server(tmp_path):
    redis_server = PrivateRedis(tmp_path / "redis")
    redis_server.start()
    yield redis_server
    redis_server.kill()


@pytest.fixture
def start(tmp_path):
    starter = Starter(tmp_path)
    yield starter
    starter.stop_all()


def worker_env(server: PrivateRedis) -> dict[str, str]:
    env = {
        **os.environ,
        "REDIS_URL": server.url,
        "LEADFLOW_TEST_QUEUE": QUEUE,
        "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_SECONDS),
        "LEADFLOW_LEASE_RENEW_SECONDS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CELERY_BROKER_URL", None)
    for pool in ("A", "B", "C"):
        env[f"LEADFLOW_POOL_{pool}_METRICS_PORT"] = "0"
    return env


def send(server: PrivateRedis, task, *args, countdown: float | None = None) -> str:
    key = f"lf:test:{time.monotonic_ns()}"
    with app.connection_for_write(server.url) as connection:
        task.apply_async(
            args=[key, *args], queue=Queue(QUEUE), connection=connection, countdown=countdown
        )
    return key


def runs(server: PrivateRedis, key: str) -> tuple[int, int]:
    client = server.client()
    try:
        return client.llen(f"{key}:started"), client.llen(f"{key}:done")
    finally:
        client.close()


def wait_runs(server, key, started: int, done: int, timeout: float, worker) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = runs(server, key)
        if seen[0] >= started and seen[1] >= done:
            return
        assert worker.popen.poll() is None, f"the worker exited:\n{worker.log()[-4000:]}"
        assert time.monotonic() < deadline, (
            f"runs (started, done) {seen}, wanted ({started}, {done}); the worker's log:\n"
            f"{worker.log()[-4000:]}"
        )
        time.sleep(0.2)


@pytest.mark.parametrize("pool", ["a", "c"])
def test_a_worker_holding_messages_rides_out_a_redis_restart(server, start, pool):
    worker = start(worker_argv(pool, QUEUE), worker_env(server), f"pool-{pool}")
    worker.wait_for("ready.")
    # Held by the worker until its countdown ends: recorded as unacked in Redis, the message
    # that closing the channel tries to restore while Redis is gone (kombu's AttributeError).
    key = send(server, slow_batch, 0.1, countdown=6)
    worker.wait_for("received")

    server.kill()
    worker.wait_for("Connection to broker lost", timeout=30)
    time.sleep(3)
    server.start()

    worker.wait_for("Connected to redis", count=2, timeout=60)
    wait_runs(server, key, started=1, done=1, timeout=60, worker=worker)
    assert worker.popen.poll() is None, worker.log()[-4000:]


def test_a_worker_rides_out_a_full_redis_and_loses_nothing(server, start):
    worker = start(worker_argv("c", QUEUE), worker_env(server), "pool-c")
    worker.wait_for("ready.")
    # One batch running when Redis fills up (its end record refused: it retries, and the retry
    # cannot be sent either), three waiting in the queue (popped while Redis is full).
    running = send(server, slow_batch_retried_on_refusal, 3.0)
    wait_runs(server, running, started=1, done=0, timeout=60, worker=worker)
    waiting = [send(server, slow_batch, 0.1) for _ in range(3)]
    admin = server.client()
    admin.config_set("maxmemory", "1")
    try:
        time.sleep(8)  # the batch ends, fails to record, retries; the next ones are popped
        assert worker.popen.poll() is None, worker.log()[-4000:]
        assert runs(server, running) == (1, 0)
    finally:
        admin.config_set("maxmemory", "0")
        admin.close()

    # The refused retry left its message unacked: handed out again when its lease lapsed.
    wait_runs(server, running, started=2, done=1, timeout=60, worker=worker)
    for key in waiting:
        wait_runs(server, key, started=1, done=1, timeout=60, worker=worker)
    client = server.client()
    try:
        deadline = time.monotonic() + 30
        while client.llen(QUEUE) or client.hlen("unacked"):
            assert time.monotonic() < deadline, (client.llen(QUEUE), client.hlen("unacked"))
            time.sleep(0.2)
    finally:
        client.close()
    assert worker.popen.poll() is None
