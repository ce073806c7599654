"""Thread-pool workers (pools B and C) recycle themselves (workers/recycle.py), with real workers
started from the Procfile's pool B command: after LEADFLOW_WORKER_MAX_TASKS tasks, or above
LEADFLOW_WORKER_MAX_MEMORY_KB of resident memory, a worker shuts down warm and exits 0; under
its supervisor (leadflow/supervise.py, as `make run` runs it) a new one takes over and no
message is lost on the way."""

import re
import uuid

import httpx

from leadflow.redis_conn import get_redis
from leadflow.redis_keys import WORKERS_RECYCLES_KEY
from tests.deploy.processes import (
    SUPERVISE,
    queued_and_unacked,
    run_pids,
    runs,
    send_slow_batch,
    worker_argv,
    worker_env,
)
from tests.deploy.procfile import with_option
from tests.deploy.test_supervise import wait_until
from tests.live.stack import free_port


def test_thread_pool_worker_exits_cleanly_after_its_task_limit(start, test_queue):
    env = worker_env(test_queue, LEADFLOW_WORKER_MAX_TASKS="2")
    worker = start(worker_argv("b", test_queue), env, "pool-b")
    worker.wait_for("ready.")
    keys = [send_slow_batch(test_queue, seconds=0.1) for _ in range(2)]

    assert worker.popen.wait(timeout=60) == 0  # a warm shutdown, as on SIGTERM
    assert [runs(key) for key in keys] == [(1, 1), (1, 1)]
    assert queued_and_unacked(test_queue) == (0, 0)
    assert "ran 2 tasks (limit 2): warm shutdown" in worker.log()


def test_thread_pool_worker_recycles_above_its_memory_limit_and_counts_it(start, test_queue):
    """Under its supervisor: the worker passes 1 KB at its first task, exits, is started again,
    and the new worker's metrics count the recycle for pool B."""
    port = free_port()
    argv = with_option(worker_argv("b", test_queue), "-n", f"pool-b-{uuid.uuid4().hex[:6]}@%h")
    env = worker_env(
        test_queue,
        LEADFLOW_WORKER_MAX_TASKS="0",
        LEADFLOW_WORKER_MAX_MEMORY_KB="1",
        LEADFLOW_POOL_B_METRICS_PORT=str(port),
    )
    counted_before = int(get_redis().hget(WORKERS_RECYCLES_KEY, "b:memory") or 0)
    supervised = start([*SUPERVISE, "--backoff-min", "0.2", "--", *argv], env, "pool-b")
    supervised.wait_for("ready.")
    key = send_slow_batch(test_queue, seconds=0.1)

    supervised.wait_for("KB (limit 1 KB): warm shutdown", timeout=60)
    supervised.wait_for("exited with code 0", timeout=60)
    supervised.wait_for("ready.", timeout=60, count=2)
    assert runs(key) == (1, 1)

    def scraped() -> int:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        found = re.search(r'leadflow_worker_recycles_total\{pool="b",reason="memory"\} (\S+)', text)
        return int(float(found.group(1))) if found else -1

    wait_until(lambda: scraped() >= counted_before + 1, 30, "the recycle in the metrics")


def test_recycled_thread_pool_loses_no_message_under_its_supervisor(start, test_queue):
    """24 batches through a pool B worker that recycles every 4 tasks, two threads at a time:
    every batch runs, each once, across at least 4 worker processes, and nothing is left in the
    queue or unacked."""
    argv = worker_argv("b", test_queue, concurrency=2)
    env = worker_env(test_queue, LEADFLOW_WORKER_MAX_TASKS="4")
    supervised = start([*SUPERVISE, "--backoff-min", "0.2", "--", *argv], env, "pool-b")
    keys = [send_slow_batch(test_queue, seconds=0.2) for _ in range(24)]

    wait_until(lambda: all(runs(key)[1] >= 1 for key in keys), 240, "every batch to run")
    assert [runs(key) for key in keys] == [(1, 1)] * len(keys), supervised.log()[-3000:]
    workers = {pid for key in keys for pid in run_pids(key)}
    assert len(workers) >= 4
    assert supervised.log().count("warm shutdown (running batches finish") >= 4
    wait_until(lambda: queued_and_unacked(test_queue) == (0, 0), 30, "the queue to be empty")

    supervised.sigterm()
    assert supervised.popen.wait(timeout=60) == 0
