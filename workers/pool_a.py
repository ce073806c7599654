"""Pool A: qualification (prefork: the work is CPU — parsing, normalizing, scoring)."""

from apps.control.routing import leads_route
from apps.control.state import shedding_current
from apps.intake.inbox import entries_decode, release_batch
from apps.leads.services import leads_qualify
from leadflow.celery import app
from workers.pool_b import enrich_leads
from workers.pool_c import sync_leads
from workers.queues import queue_name


@app.task(name="pool_a.qualify_leads")
def qualify_leads(entries: list[str], tier: str, batch_id: str | None = None) -> None:
    """Store and score a batch from an inbox, then pass it on: qualified → B, the rest → C,
    except what overload sheds (written to the deferred ledger).

    Only then is the dispatcher's in-flight copy released; until that, a lost message is
    republished by the control process (storing is idempotent by trace id).
    """
    outcome = leads_qualify(entries_decode(entries))
    route = leads_route(outcome.to_enrich, outcome.to_sync, tier, shedding_current())
    if route.to_enrich:
        enrich_leads.apply_async(args=[route.to_enrich, tier], queue=queue_name("b", tier))
    if route.to_sync:
        sync_leads.apply_async(args=[route.to_sync, tier], queue=queue_name("c", tier))
    if batch_id:
        release_batch(batch_id)
