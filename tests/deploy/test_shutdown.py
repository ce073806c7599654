"""Graceful shutdown on SIGTERM, with real processes started from the Procfile's own commands.

The API (gunicorn) finishes a request that is in flight when SIGTERM arrives. Pool A (prefork,
with REMAP_SIGTERM=SIGQUIT and a soft shutdown timeout, as deployed) finishes a short batch and
hands a long one back to its queue at once; a thread pool (B, C) finishes its running batch.
The workers run a slow test task (tests/live/slow_tasks.py) on a queue of the test's own, with
LeadFlow's Celery settings (acks_late, reject_on_worker_lost, prefetch 1).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from django.conf import settings
from kombu import Queue

from leadflow.redis_conn import get_redis
from tests.deploy.procfile import argv_with_defaults, procfile, with_option
from tests.live.slow_tasks import slow_batch
from tests.live.stack import ROOT, _die_with_parent, free_port


@dataclass
class Started:
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the log:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def sigterm(self) -> None:
        """What Kubernetes and docker do: SIGTERM to the main process only."""
        self.popen.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


@pytest.fixture
def start(tmp_path):
    started: list[Started] = []

    def start(argv: list[str], env: dict[str, str], name: str) -> Started:
        log_path = tmp_path / f"{name}-{len(started)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        started.append(Started(popen, log_path))
        return started[-1]

    yield start
    for process in started:
        process.stop()


# --- Celery workers ---


@pytest.fixture
def test_queue():
    name = f"test.shutdown.{uuid.uuid4().hex[:8]}"
    yield name
    get_redis().delete(name)


def worker_argv(pool: str, queue: str) -> list[str]:
    """The Procfile's pool command, on the slow-task app and the test's queue."""
    argv = argv_with_defaults(procfile()[f"pool-{pool}"])
    assert argv[:4] == ["celery", "-A", "leadflow", "worker"]
    argv = [sys.executable, "-m", "celery", "-A", "tests.live.slow_tasks", *argv[3:]]
    argv = with_option(argv, "-n", f"{queue}@%h")
    argv = with_option(argv, "-c", "1")
    return with_option(argv, "-Q", queue)


def worker_env(queue: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "LEADFLOW_TEST_QUEUE": queue, "PYTHONUNBUFFERED": "1", **extra}
    for name in ("REMAP_SIGTERM", "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"):
        if name not in extra:
            env.pop(name, None)
    return env


def pool_a_env(queue: str, soft_shutdown_seconds: float) -> dict[str, str]:
    """Pool A's shutdown settings in docker-compose.yml and deploy/k8s/pool-a.yaml."""
    return worker_env(
        queue,
        REMAP_SIGTERM="SIGQUIT",
        CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT=str(soft_shutdown_seconds),
    )


def send_slow_batch(queue: str, seconds: float) -> str:
    key = f"lf:test:{uuid.uuid4().hex}"
    slow_batch.apply_async(args=[key, seconds], queue=Queue(queue))
    return key


def runs(key: str) -> tuple[int, int]:
    """(started, finished) runs of the slow batch."""
    client = get_redis()
    return client.llen(f"{key}:started"), client.llen(f"{key}:done")


def wait_started(key: str, runs_started: int = 1, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while runs(key)[0] < runs_started:
        assert time.monotonic() < deadline, "the batch never started"
        time.sleep(0.05)


def queued_and_unacked(queue: str) -> tuple[int, int]:
    client = get_redis()
    unacked = [
        raw for raw in client.hvals("unacked") if json.loads(raw)[2] == queue
    ]  # kombu keeps [message, exchange, routing key]
    return client.llen(queue), len(unacked)


def test_pool_a_finishes_its_running_batch_on_sigterm(start, test_queue):
    worker = start(worker_argv("a", test_queue), pool_a_env(test_queue, 4), "pool-a")
    worker.wait_for("ready.")
    key = send_slow_batch(test_queue, seconds=2)
    wait_started(key)

    worker.sigterm()
    assert worker.popen.wait(timeout=30) == 0
    assert runs(key) == (1, 1)
    assert queued_and_unacked(test_queue) == (0, 0)  # acked: it will not run again


def test_pool_a_hands_a_long_batch_back_to_its_queue_on_sigterm(start, test_queue):
    worker = start(worker_argv("a", test_queue), pool_a_env(test_queue, 1), "pool-a")
    worker.wait_for("ready.")
    key = send_slow_batch(test_queue, seconds=60)
    wait_started(key)

    began = time.monotonic()
    worker.sigterm()
    worker.popen.wait(timeout=30)
    assert time.monotonic() - began < 15  # well inside pool A's 30 s grace period
    assert runs(key) == (1, 0)
    # Back on the queue at once, not after the visibility timeout: the next worker takes it.
    assert queued_and_unacked(test_queue) == (1, 0)

    successor = start(worker_argv("a", test_queue), pool_a_env(test_queue, 1), "pool-a")
    successor.wait_for("ready.")
    wait_started(key, runs_started=2)


def test_thread_pool_finishes_its_running_batch_on_sigterm(start, test_queue):
    worker = start(worker_argv("b", test_queue), worker_env(test_queue), "pool-b")
    worker.wait_for("ready.")
    key = send_slow_batch(test_queue, seconds=3)
    wait_started(key)

    worker.sigterm()
    time.sleep(1)
    assert worker.popen.poll() is None, "the worker left before its batch was done"
    assert worker.popen.wait(timeout=30) == 0
    assert runs(key) == (1, 1)
    assert queued_and_unacked(test_queue) == (0, 0)
    # The task's log lines carry its context (leadflow/logs.py).
    records = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    succeeded = [r for r in records if "succeeded" in r["event"]]
    assert succeeded and succeeded[0]["task"] == "tests.slow_batch"
    assert succeeded[0]["task_id"]


# --- the API ---


def wait_answering(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "gunicorn did not answer"
        time.sleep(0.1)


@pytest.mark.django_db(transaction=True)
def test_api_finishes_an_in_flight_request_on_sigterm(start, make_tenant):
    """A lead whose body is still arriving when gunicorn gets SIGTERM is admitted (202)."""
    _, api_key = make_tenant("shutdown")
    port = free_port()
    argv = argv_with_defaults(procfile()["api"])
    assert argv[:2] == ["gunicorn", "leadflow.wsgi"]
    argv = with_option([sys.executable, "-m", *argv], "-b", f"127.0.0.1:{port}")
    test_db = settings.DATABASES["default"]["NAME"]
    database_url = urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{test_db}"))
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    api = start(argv, env, "api")
    api.wait_for("Booting worker")
    graceful_timeout = float(argv[argv.index("--graceful-timeout") + 1])

    body = json.dumps({"email": f"{uuid.uuid4().hex[:10]}@shutdown.example"}).encode()
    head = (
        f"POST /api/v1/leads HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {api_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    # "Booting worker" comes before the worker has loaded Django: wait until one answers.
    wait_answering(port)
    conn = socket.create_connection(("127.0.0.1", port), timeout=15)
    with conn:
        conn.sendall(head + body[:10])  # the view is now waiting for the rest of the body
        time.sleep(1.0)
        api.sigterm()
        began = time.monotonic()
        time.sleep(1.0)
        assert api.popen.poll() is None, "gunicorn quit with a request in flight"
        conn.sendall(body[10:])
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 202"), answer[:500]
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["status"] == "queued"
    assert api.popen.wait(timeout=graceful_timeout + 5) == 0
    assert time.monotonic() - began < graceful_timeout + 5
