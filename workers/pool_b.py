"""Pool B: AI enrichment (thread pool: the work is waiting on the provider)."""

from apps.enrichment.services import leads_enrich, leads_enrich_deferred
from leadflow.celery import app
from workers.pool_c import sync_leads
from workers.queues import queue_name


@app.task(name="pool_b.enrich_leads")
def enrich_leads(trace_ids: list[str], tier: str) -> None:
    """Enrich the batch (provider, or cache/local fallback when it fails), then hand it to C."""
    enriched = leads_enrich(trace_ids)
    if enriched:
        sync_leads.apply_async(args=[enriched, tier], queue=queue_name("c", tier))


@app.task(name="pool_b.enrich_deferred_leads")
def enrich_deferred_leads(trace_ids: list[str], tier: str = "low") -> None:
    """Backfill (LOW): enrich leads whose enrichment was shed, then deliver them to the CRM
    (again, for those synced meanwhile: the second delivery carries the enrichment)."""
    enriched = leads_enrich_deferred(trace_ids)
    if enriched:
        sync_leads.apply_async(
            args=[enriched, tier], kwargs={"resend": True}, queue=queue_name("c", tier)
        )
