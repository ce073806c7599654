"""Graceful shutdown on SIGTERM, with real processes started from the Procfile's own commands.

The API (gunicorn) finishes a request that is in flight when SIGTERM arrives. Pool A (prefork,
with REMAP_SIGTERM=SIGQUIT and a soft shutdown timeout, as deployed) finishes a short batch and
hands a long one back to its queue at once; a thread pool (B, C) finishes its running batch.
The workers run a slow test task (tests/live/slow_tasks.py) on a queue of the test's own, with
LeadFlow's Celery settings (acks_late, reject_on_worker_lost, prefetch 1).
"""

import json
import os
import socket
import sys
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from django.conf import settings

from tests.deploy.processes import (
    pool_a_env,
    queued_and_unacked,
    runs,
    send_slow_batch,
    wait_started,
    worker_argv,
    worker_env,
)
from tests.deploy.procfile import argv_with_defaults, procfile, with_option
from tests.live.stack import free_port


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
    done = [r for r in records if r["event"].startswith("tests.slow_batch: done in ")]
    assert done and done[0]["task"] == "tests.slow_batch"
    assert done[0]["task_id"] and done[0]["duration_seconds"] >= 3


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
