"""LeadFlow's project core, the lowest layer (apps and workers import it, it imports neither but
for the project's wiring): settings (settings/), the one Celery app (celery.py), the pipeline's
tiers and queue names (queues.py), the hand-off between stages by task name (handoff.py),
Redis key names (redis_keys.py), the Redis connection, outbound calls and their guard,
breakers, metrics, logs, the timing checks, the WSGI entry point and the dev services.
Importing it loads the one Celery app."""

from leadflow.celery import app as celery_app

__all__ = ("celery_app",)
