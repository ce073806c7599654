"""Celery's settings (the CELERY_ namespace of leadflow/celery.py's app), each with its reason."""

from leadflow.env import env_float, env_int, env_str
from leadflow.settings.base import REDIS_URL

# ---------------------------------------------------------------------------
# Celery. Only what matters is set, each with its reason.
# ---------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", REDIS_URL)
# Results are written to PostgreSQL by the tasks themselves; nobody reads task results.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Ack after the task ran, so a worker that dies mid-batch leaves the message to be redelivered.
CELERY_TASK_ACKS_LATE = True
# A pool child killed by SIGKILL/OOM: put the message back instead of acking it as failed.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One message at a time per process: prefetch would pull low-tier batches ahead of critical ones.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Time limits bound a stuck batch; the soft limit lets the task stop cleanly first.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300)
# Recycle prefork children to bound slow leaks.
CELERY_WORKER_MAX_TASKS_PER_CHILD = env_int("CELERY_WORKER_MAX_TASKS_PER_CHILD", 10_000)
# Celery's Django fixup closes every database connection before and after every task unless
# this is set: a new PostgreSQL connection for every batch cost pool A a fifth of its time.
# Set, a connection is kept for up to twice this many tasks, and leadflow/celery.py closes a
# broken one, or one older than CONN_MAX_AGE, around each task (Django's close_old_connections).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
CELERY_WORKER_SEND_TASK_EVENTS = True  # for Flower
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# An error Redis answers (OOM when full) makes a worker reconnect, as a lost connection does,
# instead of exiting; redis:// itself is kombu's transport made to ride out a Redis killed or
# full (leadflow/broker.py).
CELERY_BROKER_CHANNEL_ERROR_RETRY = True
# How often each worker renews the leases of the messages it holds (workers/lease.py).
LEASE_RENEW_SECONDS = env_float("LEADFLOW_LEASE_RENEW_SECONDS", 5.0)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Workers list their queues critical, normal, low; "priority" makes BRPOP try them
    # in that order every time, so a waiting critical batch is always taken first.
    "queue_order_strategy": "priority",
    # An unacked message is handed out again once it has not been renewed for this long.
    # Workers renew the messages they hold every LEASE_RENEW_SECONDS (workers/lease.py), so a
    # batch however long is never doubled while it runs, and a killed worker's batch comes
    # back within this plus the restore interval. At least 3 x LEASE_RENEW_SECONDS (a check).
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 25),
    # How soon a message of a dead worker comes back once its visibility timeout passed:
    # kombu's default sweeps only every 10 s x 10 calls (~100 s); one cheap ZRANGE every 5 s
    # per worker brings a killed batch back within seconds of its timeout.
    "unacked_restore_interval": 5,
    "unacked_restore_throttle": 1,
    # Restores run under a Redis mutex that expires after 300 s by default: a worker killed
    # while holding it (a restore takes milliseconds) would stop every restore for 5 minutes,
    # killed workers' batches included. 15 s bounds that.
    "unacked_mutex_expire": 15,
}
