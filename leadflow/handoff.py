"""Work handed from stage to stage, by task *name*: the one place that publishes pipeline tasks.

Services and the control process send work through these functions instead of importing task
modules, so dependencies point one way (tasks import services, never the reverse). Import-light:
the Celery app and the queue names only.
"""

from leadflow.celery import app
from workers.queues import LEADS_PER_MESSAGE_MAX, queue_name

QUALIFY_TASK = "pool_a.qualify_leads"
ENRICH_TASK = "pool_b.enrich_leads"
SYNC_TASK = "pool_c.sync_leads"


def send_to_qualify(entries: list[str], tier: str, batch_id: str | None = None) -> None:
    """Inbox entries (JSON text) to pool A; batch_id names the dispatcher's in-flight copy."""
    app.send_task(QUALIFY_TASK, args=[entries, tier, batch_id], queue=queue_name("a", tier))


def send_to_enrich(trace_ids: list[str], tier: str) -> None:
    """Stored, qualified leads to pool B, a bounded batch a message."""
    for batch in _batches(trace_ids):
        app.send_task(ENRICH_TASK, args=[batch, tier], queue=queue_name("b", tier))


def send_to_sync(trace_ids: list[str], tier: str, resend: bool = False) -> None:
    """CRM-ready leads to pool C, a bounded batch a message; resend delivers synced ones again."""
    kwargs = {"resend": True} if resend else {}
    for batch in _batches(trace_ids):
        app.send_task(SYNC_TASK, args=[batch, tier], kwargs=kwargs, queue=queue_name("c", tier))


def _batches(trace_ids: list[str]):
    for start in range(0, len(trace_ids), LEADS_PER_MESSAGE_MAX):
        yield trace_ids[start : start + LEADS_PER_MESSAGE_MAX]
