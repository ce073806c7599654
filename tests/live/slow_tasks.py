"""LeadFlow's Celery app (same settings: acks_late, reject_on_worker_lost, prefetch 1) plus one slow
task, for the graceful-shutdown tests. Start a worker with `-A tests.live.slow_tasks` and `-Q`
a queue of the test's own (LEADFLOW_TEST_QUEUE), so no pool of a running live stack takes it.
"""

import os
import time

import redis
from kombu import Queue

from leadflow.celery import app
from leadflow.redis_conn import get_redis

TEST_QUEUE = os.environ.get("LEADFLOW_TEST_QUEUE", "test.shutdown")
app.conf.task_queues = [*app.conf.task_queues, Queue(TEST_QUEUE)]


@app.task(name="tests.slow_batch")
def slow_batch(key: str, seconds: float) -> None:
    """Record a start under `key`, work for `seconds`, record the end: one run = one start."""
    client = get_redis()
    client.rpush(f"{key}:started", os.getpid())
    time.sleep(seconds)
    client.rpush(f"{key}:done", os.getpid())


@app.task(name="tests.slow_batch_retried_on_refusal", bind=True, max_retries=None)
def slow_batch_retried_on_refusal(self, key: str, seconds: float) -> None:
    """As slow_batch, but a Redis that refuses the end record (full, down) retries the batch,
    as the pools' tasks retry what a dependency refused."""
    client = get_redis()
    client.rpush(f"{key}:started", os.getpid())
    time.sleep(seconds)
    try:
        client.rpush(f"{key}:done", os.getpid())
    except redis.RedisError as error:
        raise self.retry(exc=error, countdown=1) from error
