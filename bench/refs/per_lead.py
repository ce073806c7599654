"""Reference for the pipeline: the same work as pool A, one Celery task per lead.

The task runs pool A's own task body (workers.pool_a.qualify_leads: qualification service,
routing, fan-out to B or C) on a batch of one. The worker runs with pool A's Procfile options:
`celery -A bench.refs.per_lead worker -Q bench.per_lead ...`.
"""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "leadflow.settings")

QUEUE = "bench.per_lead"

app = Celery("bench_per_lead")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(QUEUE)]
app.conf.task_create_missing_queues = False


@app.task(name="bench.per_lead.qualify_lead")
def qualify_lead(entry: str, tier: str) -> None:
    # Imported here: the app's models load only once Celery's Django fixup has set Django up.
    from workers.pool_a import qualify_leads

    qualify_leads.run([entry], tier)
