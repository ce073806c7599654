"""Pool B: AI enrichment (thread pool: the work is waiting on the provider)."""

from apps.enrichment.services import leads_enrich
from leadflow.celery import app
from workers.pool_c import sync_leads
from workers.queues import queue_name


@app.task(name="pool_b.enrich_leads")
def enrich_leads(trace_ids: list[str], tier: str) -> None:
    """Enrich the batch (provider, or cache/local fallback when it fails), then hand it to C."""
    enriched = leads_enrich(trace_ids)
    if enriched:
        sync_leads.apply_async(args=[enriched, tier], queue=queue_name("c", tier))
