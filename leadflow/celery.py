"""The one Celery app. Settings live in Django settings under the CELERY_ namespace."""

import os

from celery import Celery

from leadflow import logs  # noqa: F401 - connects the worker's logging and task-context signals
from workers import metrics  # noqa: F401 - connects the pools' metrics, heartbeats, sent-at stamp
from workers.queues import TASK_QUEUES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leadflow.settings")

app = Celery("leadflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = TASK_QUEUES
app.conf.task_create_missing_queues = False
# The pools' task modules; each worker imports all three so any of them can publish the next stage.
app.conf.imports = ("workers.pool_a", "workers.pool_b", "workers.pool_c")
