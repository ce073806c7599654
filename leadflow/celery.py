"""The one Celery app. Settings live in Django settings under the CELERY_ namespace."""

import os
import time

from celery import Celery, Task
from celery.exceptions import Reject
from celery.signals import before_task_publish, task_postrun, task_prerun
from django.db import close_old_connections

from leadflow import (
    broker,  # noqa: F401 - redis:// is kombu's transport made to ride out outages
    logs,  # noqa: F401 - connects the worker's logging and task-context signals
    redis_checks,  # noqa: F401 - the Redis durability check, run as a worker starts
)
from leadflow.queues import TASK_QUEUES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leadflow.settings")


class LeadflowTask(Task):
    """Every task's base: a retry that cannot be published never drops its message."""

    def retry(self, *args, **kwargs):
        try:
            return super().retry(*args, **kwargs)
        except Reject as reject:
            # Celery rejects the message for good when the retry cannot be sent (Redis down or
            # full), leaving the batch to the stalled-lead sweeper minutes later. Requeued
            # instead; when Redis refuses that too, the message stays recorded as unacked and
            # is handed out again when its lease lapses (workers/lease.py, leadflow/broker.py).
            raise Reject(reject.reason, requeue=True) from reject


app = Celery("leadflow", task_cls=LeadflowTask)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = TASK_QUEUES
app.conf.task_create_missing_queues = False
# The pools' task modules; each worker imports all three so any of them can publish the next stage.
# Importing them imports the package `workers`, which connects the workers' own signals (leases,
# metrics and heartbeats, recycling, pool A's scoring check): only worker processes load them,
# and this module never imports workers/ (dependencies point one way: workers → apps → leadflow).
app.conf.imports = ("workers.pool_a", "workers.pool_b", "workers.pool_c")

# Every message carries the time it was published, from which the control process measures
# each queue's lag (apps/status/selectors.py). Here, as every process that publishes (the
# control process, the API's replays, the pools) loads this app.
SENT_AT_HEADER = "lf_sent_at"


@before_task_publish.connect
def _stamp_sent_at(headers=None, **kwargs) -> None:
    if headers is not None:
        headers[SENT_AT_HEADER] = time.time()


@task_prerun.connect
@task_postrun.connect
def _db_connections_tidy(sender=None, **kwargs) -> None:
    """With CELERY_DB_REUSE_MAX set, Celery no longer closes the database connections around
    every task; Django's own rule does it instead: a broken connection, or one older than
    CONN_MAX_AGE, is closed and the next query opens a new one. A task run in the caller's
    process (apply) uses the caller's connection, which is left alone, as Celery does."""
    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()
