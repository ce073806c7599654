"""Recycling for workers whose pool does not recycle itself: pools B and C run Celery's threads
pool, where --max-tasks-per-child and --max-memory-per-child do nothing (no child processes).

The same protection against slow leaks, one level up: once a worker has run
LEADFLOW_WORKER_MAX_TASKS tasks (plus up to 10 % at random, so workers started together do not
all go at once), or its resident memory passes LEADFLOW_WORKER_MAX_MEMORY_KB, it starts a warm
shutdown, exactly as on SIGTERM: it stops taking messages, finishes the batches it is running,
acks them, and exits 0. Its supervisor starts a new one: compose's `restart:`, Kubernetes'
restart policy, or leadflow/supervise.py under `make run`. Messages it had reserved but not
started are unacked, so the broker hands them to the next worker (acks_late). 0 turns a limit off.

Each recycle is counted per pool and reason in Redis (the worker that counts it is about to exit,
so its own counter would never be scraped); every worker of the pool exports the pool's total as
`leadflow_worker_recycles_total{pool,reason}` (deploy/prometheus/rules.yml alerts on a pool that
recycles too often). Prefork workers (pool A) are left to billiard's per-child limits.
"""

import logging
import os
import random
import re
import resource
import signal
import threading

from celery import signals
from prometheus_client.core import REGISTRY, CounterMetricFamily

from leadflow.redis_keys import WORKERS_RECYCLES_KEY

log = logging.getLogger(__name__)

REASONS = ("tasks", "memory")
JITTER_SHARE = 0.1
_QUEUE = re.compile(r"^([abc])\.(critical|normal|low)$")
_NODE = re.compile(r"^pool-([abc])\b")
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

_lock = threading.Lock()
_state: dict = {"armed": False, "tasks": 0, "requested": False}


def rss_kb() -> int:
    """This process's resident memory now (Linux), else its peak (ru_maxrss, KB on Linux)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_KB
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _pool_of(worker) -> str:
    """The pool's letter, as workers/metrics.py names it: from the worker's queues (b.*), else
    from its node name (pool-b@…); '' for a worker of no pool."""
    queues = list(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
    pools = {match.group(1) for name in queues if (match := _QUEUE.match(name))}
    if len(pools) == 1:
        return pools.pop()
    node = _NODE.match(worker.hostname or "")
    return node.group(1) if node else ""


@signals.worker_ready.connect
def _recycle_arm(sender=None, **kwargs) -> None:
    from django.conf import settings

    if type(sender.pool).__module__.endswith("prefork"):
        return  # billiard recycles the children (--max-tasks-per-child, --max-memory-per-child)
    max_tasks = settings.WORKER_MAX_TASKS
    jitter = random.randint(0, int(max_tasks * JITTER_SHARE)) if max_tasks > 0 else 0
    _state.update(
        armed=max_tasks > 0 or settings.WORKER_MAX_MEMORY_KB > 0,
        max_tasks=max_tasks + jitter if max_tasks > 0 else 0,
        max_memory_kb=max(0, settings.WORKER_MAX_MEMORY_KB),
        hostname=sender.hostname,
        pool=_pool_of(sender) or "unknown",
        tasks=0,
        requested=False,
    )
    if _state["armed"]:
        log.info(
            "recycle: %s restarts after %s tasks or above %s KB of resident memory",
            sender.hostname,
            _state["max_tasks"] or "unlimited",
            _state["max_memory_kb"] or "unlimited",
        )


@signals.task_postrun.connect
def _recycle_check(**kwargs) -> None:
    # Runs in the pool's thread that ran the task, after the task and before its ack.
    if not _state["armed"]:
        return
    with _lock:
        _state["tasks"] += 1
        tasks = _state["tasks"]
        if _state["requested"]:
            return
        reason = ""
        if _state["max_tasks"] and tasks >= _state["max_tasks"]:
            reason, detail = "tasks", f"ran {tasks} tasks (limit {_state['max_tasks']})"
        elif _state["max_memory_kb"]:
            resident = rss_kb()
            if resident > _state["max_memory_kb"]:
                limit = _state["max_memory_kb"]
                reason, detail = "memory", f"uses {resident} KB (limit {limit} KB)"
        if not reason:
            return
        _state["requested"] = True
    log.warning(
        "recycle: %s %s: warm shutdown (running batches finish, the rest go back to the "
        "queue); its supervisor starts a new worker",
        _state["hostname"],
        detail,
    )
    _recycle_count(_state["pool"], reason)
    # The operator's SIGTERM path (Celery's warm shutdown, exit code 0), tested with real
    # workers in tests/deploy/test_shutdown.py; the handler runs in the main thread.
    os.kill(os.getpid(), signal.SIGTERM)


def _recycle_count(pool: str, reason: str) -> None:
    from leadflow.redis_conn import get_redis

    try:
        get_redis().hincrby(WORKERS_RECYCLES_KEY, f"{pool}:{reason}", 1)
    except Exception:  # Redis away: a lost count is not worth keeping a leaking worker for
        log.warning("recycle: the recycle of a pool %s worker was not counted", pool)


class RecyclesCollector:
    """Serves the pool's recycle counts from Redis, in a thread-pool worker's metrics only."""

    def describe(self):
        return [self._family()]

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "leadflow_worker_recycles",
            "Workers of a thread pool (B, C) that restarted themselves, by pool and reason "
            "(tasks: LEADFLOW_WORKER_MAX_TASKS reached; memory: LEADFLOW_WORKER_MAX_MEMORY_KB "
            "passed). The pool's total, the same in each of its workers.",
            labels=["pool", "reason"],
        )

    def collect(self):
        if not _state["armed"]:
            return
        from leadflow.redis_conn import get_redis

        try:
            counts = get_redis().hgetall(WORKERS_RECYCLES_KEY)
        except Exception:
            log.debug("recycle: counts not read", exc_info=True)
            return
        family = self._family()
        pool = _state["pool"]
        for reason in REASONS:
            family.add_metric([pool, reason], int(counts.get(f"{pool}:{reason}".encode(), 0)))
        yield family


REGISTRY.register(RecyclesCollector())
