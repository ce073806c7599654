"""The pools' metrics, from Celery's signals (no task is edited for them): per stage, how long a
batch takes, how big it is, how many leads went through, and how each run ended (success,
failure, retry). Each pool's worker serves them on its own port (LEADFLOW_POOL_<X>_METRICS_PORT).

Pool A is prefork: its tasks run in child processes, so its values live in files under
PROMETHEUS_MULTIPROC_DIR (set in the environment by the Procfile, compose and k8s; emptied here
when the worker starts) and the main process's server adds them up. Pools B and C run threads in
one process: their values are that process's own.

Also here, the workers' heartbeats, from which the control process counts each pool's workers
(apps/status/selectors.py). The header stamping each message with the time it was sent is
the Celery app's (leadflow/celery.py): every process that publishes needs it, not only workers.
"""

import logging
import os
import re
import threading
import time

from celery import signals
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client import multiprocess as prometheus_multiprocess

from leadflow.queues import POOLS, TIERS
from leadflow.redis_keys import pool_workers_key

log = logging.getLogger(__name__)

# What each task does, for the `stage` label. A task missing here is labelled by its name.
STAGES = {
    "pool_a.qualify_leads": "qualification",
    "pool_b.enrich_leads": "enrichment",
    "pool_b.enrich_deferred_leads": "enrichment_backfill",
    "pool_b.probe_ai_provider": "ai_probe",
    "pool_c.sync_leads": "crm_sync",
    "pool_c.build_report": "report",
}
_QUEUE = re.compile(rf"^([{''.join(POOLS)}])\.({'|'.join(TIERS)})$")
_NODE = re.compile(rf"^pool-([{''.join(POOLS)}])\b")

STAGE_DURATION = Histogram(
    "leadflow_stage_duration_seconds",
    "Time a pool took to run one task (a batch), by pool, stage and tier.",
    ["pool", "stage", "tier"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
BATCH_SIZE = Histogram(
    "leadflow_stage_batch_size",
    "Leads in one task's batch, by pool and stage.",
    ["pool", "stage"],
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500),
)
STAGE_LEADS = Counter(
    "leadflow_stage_leads",
    "Leads in the batches a pool ran (each run counts, a retried batch again), by pool, stage "
    "and tier: the pools' throughput.",
    ["pool", "stage", "tier"],
)
STAGE_TASKS = Counter(
    "leadflow_stage_tasks",
    "Task runs, by pool, stage, tier (the queue's) and outcome: success, failure (given up) or "
    "retry (will run again).",
    ["pool", "stage", "tier", "outcome"],
)
STAGE_FAILURES = Counter(
    "leadflow_stage_failures",
    "Task runs that failed for good, by pool, stage and exception type.",
    ["pool", "stage", "exception"],
)
STAGE_RUNNING = Gauge(
    "leadflow_stage_running",
    "Tasks running now, by pool and stage.",
    ["pool", "stage"],
    multiprocess_mode="livesum",
)

# (task id, thread) -> (start, pool, stage, tier). By thread too: a retry keeps its task id, and
# with a countdown of 0 another thread can start it before this run has ended.
_started: dict[tuple[str, int], tuple[float, str, str, str]] = {}
_worker: dict[str, str] = {}  # this worker's pool and node name, once ready


def _where(task) -> tuple[str, str, str]:
    """(pool, stage, tier) of the running task: pool and tier from the queue it came from."""
    request = task.request
    queue = (request.delivery_info or {}).get("routing_key") or ""
    match = _QUEUE.match(queue)
    if match:
        pool, tier = match.groups()
    else:
        node = _NODE.match(request.hostname or "")
        pool, tier = (node.group(1) if node else "unknown"), "unknown"
    return pool, STAGES.get(task.name, task.name), tier


def _batch(args, kwargs) -> list | None:
    for name in ("trace_ids", "entries"):
        if isinstance(kwargs.get(name), list):
            return kwargs[name]
    if args and isinstance(args[0], list):
        return args[0]
    return None


# --- the worker's main process ---


@signals.worker_init.connect
def _multiprocess_dir_reset(**kwargs) -> None:
    # Before the pool forks its children: a previous run's files would add to this run's sums.
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        from leadflow.metrics import multiprocess_dir_reset

        multiprocess_dir_reset(path)


@signals.worker_ready.connect
def _metrics_serve(sender=None, **kwargs) -> None:
    from django.conf import settings

    from leadflow.metrics import metrics_serve, scrape_registry

    queues = list(sender.app.amqp.queues.consume_from or sender.app.amqp.queues)
    pools = {name.split(".")[0] for name in queues if _QUEUE.match(name)}
    node = _NODE.match(sender.hostname or "")
    pool = pools.pop() if len(pools) == 1 else (node.group(1) if node else "")
    _worker.update(pool=pool, hostname=sender.hostname)
    if not pool:
        log.warning("metrics: the worker consumes %s, not one pool's queues: no metrics", queues)
        return
    prefork = type(sender.pool).__module__.endswith("prefork")
    if prefork and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        log.error(
            "metrics: pool %s is prefork but PROMETHEUS_MULTIPROC_DIR is not set: its tasks run "
            "in child processes, whose metrics this worker cannot show",
            pool,
        )
    metrics_serve(settings.POOL_METRICS_PORTS.get(pool, 0), scrape_registry(), f"pool {pool}")


@signals.heartbeat_sent.connect
def _heartbeat_record(**kwargs) -> None:
    # Sent from the worker's event loop every 2 s: a worker whose loop is stuck stops beating.
    if not _worker.get("pool"):
        return
    from leadflow.redis_conn import get_redis

    try:
        get_redis().zadd(pool_workers_key(_worker["pool"]), {_worker["hostname"]: time.time()})
    except Exception:  # Redis away: the heartbeat is a measure, never a reason to stop
        log.debug("metrics: heartbeat not recorded", exc_info=True)


@signals.worker_shutdown.connect
def _heartbeat_forget(**kwargs) -> None:
    if not _worker.get("pool"):
        return
    from leadflow.redis_conn import get_redis

    try:
        get_redis().zrem(pool_workers_key(_worker["pool"]), _worker["hostname"])
    except Exception:
        log.debug("metrics: worker not removed from the heartbeats", exc_info=True)


@signals.worker_process_shutdown.connect
def _process_gone(pid=None, **kwargs) -> None:
    # A prefork child recycled (max tasks / memory per child): its live gauges go.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        prometheus_multiprocess.mark_process_dead(pid or os.getpid())


# --- where tasks run (a prefork child, or a pool thread) ---


@signals.task_prerun.connect
def _task_start(task_id=None, task=None, args=None, kwargs=None, **extra) -> None:
    pool, stage, tier = _where(task)
    _started[(task_id, threading.get_ident())] = (time.perf_counter(), pool, stage, tier)
    STAGE_RUNNING.labels(pool, stage).inc()
    batch = _batch(args or (), kwargs or {})
    if batch is not None:
        BATCH_SIZE.labels(pool, stage).observe(len(batch))
        STAGE_LEADS.labels(pool, stage, tier).inc(len(batch))


@signals.task_postrun.connect
def _task_end(task_id=None, state=None, **extra) -> None:
    started = _started.pop((task_id, threading.get_ident()), None)
    if started is None:
        return
    start, pool, stage, tier = started
    STAGE_RUNNING.labels(pool, stage).dec()
    STAGE_DURATION.labels(pool, stage, tier).observe(time.perf_counter() - start)
    outcome = {"SUCCESS": "success", "FAILURE": "failure", "RETRY": "retry"}.get(
        state or "", (state or "unknown").lower()
    )
    STAGE_TASKS.labels(pool, stage, tier, outcome).inc()


@signals.task_failure.connect
def _task_failed(sender=None, exception=None, **extra) -> None:
    if sender is None:
        return
    pool, stage, _ = _where(sender)
    STAGE_FAILURES.labels(pool, stage, type(exception).__name__).inc()
