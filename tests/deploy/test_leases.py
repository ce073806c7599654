"""Leases on held messages (workers/lease.py), with real workers started from the Procfile's
commands on a queue of the test's own: a batch that outlasts the visibility timeout runs once,
and a worker killed with SIGKILL has its batch handed to another within seconds."""

import time

import pytest

from leadflow.redis_conn import get_redis

# Fixtures start (processes started and stopped) and test_queue: tests/deploy/conftest.py.
from tests.deploy.processes import (
    queued_and_unacked,
    runs,
    send_slow_batch,
    wait_started,
    worker_argv,
    worker_env,
)

VISIBILITY_SECONDS = 4  # kombu hands out a message not renewed for this long (restore: 5 s)
BATCH_SECONDS = 15  # the killed worker's batch


def lease_env(queue: str) -> dict[str, str]:
    return worker_env(
        queue, CELERY_VISIBILITY_TIMEOUT=str(VISIBILITY_SECONDS), LEADFLOW_LEASE_RENEW_SECONDS="1"
    )


@pytest.mark.parametrize("pool", ["a", "b"])
def test_a_batch_longer_than_the_visibility_timeout_runs_once(start, test_queue, pool):
    workers = [start(worker_argv(pool, test_queue), lease_env(test_queue), f"pool-{pool}")]
    workers.append(start(worker_argv(pool, test_queue), lease_env(test_queue), f"pool-{pool}"))
    for worker in workers:
        worker.wait_for("ready.")
    key = send_slow_batch(test_queue, seconds=4 * VISIBILITY_SECONDS)
    wait_started(key, timeout=120)

    deadline = time.monotonic() + 8 * VISIBILITY_SECONDS
    while runs(key)[1] < 1:
        assert time.monotonic() < deadline, "the batch never finished"
        time.sleep(0.2)
    time.sleep(2)  # a second run, had one been handed out, would have started by now
    assert runs(key) == (1, 1)
    assert queued_and_unacked(test_queue) == (0, 0)


def test_a_killed_workers_batch_runs_elsewhere_within_seconds(start, test_queue):
    doomed = start(worker_argv("b", test_queue), lease_env(test_queue), "pool-b")
    doomed.wait_for("ready.")
    # Long enough to outlast the survivor's start on a loaded machine: the doomed worker must
    # still hold the batch when it is killed.
    key = send_slow_batch(test_queue, seconds=BATCH_SECONDS)
    wait_started(key, timeout=120)  # a loaded machine can take long to hand out the first
    survivor = start(worker_argv("b", test_queue), lease_env(test_queue), "pool-b")
    survivor.wait_for("ready.")
    assert runs(key) == (1, 0), "the batch ended before its worker could be killed"

    doomed.stop()  # SIGKILL: no warm shutdown, the message stays unacked
    killed_at = time.monotonic()
    try:
        wait_started(key, runs_started=2, timeout=60)
    except AssertionError:
        client = get_redis()
        raise AssertionError(
            f"not run again: queued/unacked {queued_and_unacked(test_queue)}, restore mutex "
            f"ttl {client.ttl('unacked_mutex')}, unacked index {client.zcard('unacked_index')};"
            f" the survivor's log:\n{survivor.log()[-3000:]}"
        ) from None
    resumed_after = time.monotonic() - killed_at
    # The visibility timeout plus kombu's restore interval (5 s), with room for a loaded machine;
    # without renewals it is the same, but a long batch would run twice (the test above).
    assert resumed_after < VISIBILITY_SECONDS + 5 + 10, resumed_after
    deadline = time.monotonic() + BATCH_SECONDS + 30
    while runs(key)[1] < 1:
        assert time.monotonic() < deadline, "the batch never finished on the survivor"
        time.sleep(0.2)
