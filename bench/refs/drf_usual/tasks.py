"""The usual Celery app and task: one message per lead. No worker consumes them in the bench."""

from celery import Celery
from django.conf import settings

app = Celery("bench_usual", broker=settings.REDIS_URL)
app.conf.task_serializer = "json"
app.conf.task_ignore_result = True

QUEUE = "bench.usual"


@app.task(name="bench.usual.process_lead")
def process_lead(lead: dict) -> None:
    """Stands for the processing; the bench measures the intake side only."""
