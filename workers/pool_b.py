"""Pool B: AI enrichment (thread pool: the work is waiting on the provider).

Celery enforces no time limit on a thread pool (celery/celery#9203): each task keeps its own
deadline (a provider call starts only while one fits) and re-enqueues the leads whose domains
were not asked in time (into the deferred ledger while their tier is paused). PostgreSQL or
Redis down: the message is retried for as long as the outage lasts; a lead that fails for a
reason of its own is quarantined in the service.
"""

from django.conf import settings

from apps.enrichment.services import (
    ai_provider_probe,
    enrich_outcome_defer_if_paused,
    leads_enrich,
    leads_enrich_deferred,
)
from leadflow import handoff
from leadflow.celery import app
from leadflow.outbound import DEPENDENCY_DOWN_ERRORS, Deadline
from leadflow.queues import queue_name

_RETRY_ON_OUTAGE = {
    "autoretry_for": DEPENDENCY_DOWN_ERRORS,
    "max_retries": None,
    "retry_backoff": True,
    "retry_backoff_max": settings.DEPENDENCY_RETRY_MAX_SECONDS,
    "retry_jitter": True,
}


@app.task(name="pool_b.enrich_leads", **_RETRY_ON_OUTAGE)
def enrich_leads(trace_ids: list[str], tier: str) -> None:
    """Enrich the batch (provider, or cache/local fallback when it fails), then hand it to C."""
    outcome = leads_enrich(trace_ids, deadline=Deadline(settings.AI_TASK_DEADLINE_SECONDS))
    if enrich_outcome_defer_if_paused(outcome, tier):
        return
    if outcome.later:
        enrich_leads.apply_async(args=[outcome.later, tier], queue=queue_name("b", tier))
    if outcome.enriched:
        handoff.send_to_sync(outcome.enriched, tier)


@app.task(name="pool_b.enrich_deferred_leads", **_RETRY_ON_OUTAGE)
def enrich_deferred_leads(trace_ids: list[str], tier: str = "low") -> None:
    """Backfill (LOW): enrich leads whose enrichment was shed, then deliver them to the CRM
    (again, for those synced meanwhile: the second delivery carries the enrichment)."""
    outcome = leads_enrich_deferred(trace_ids, deadline=Deadline(settings.AI_TASK_DEADLINE_SECONDS))
    if enrich_outcome_defer_if_paused(outcome, tier):
        return
    if outcome.later:
        enrich_deferred_leads.apply_async(args=[outcome.later, tier], queue=queue_name("b", tier))
    if outcome.enriched:
        handoff.send_to_sync(outcome.enriched, tier, resend=True)


@app.task(name="pool_b.probe_ai_provider")
def probe_ai_provider() -> None:
    """Try the AI provider while its breaker is open or failing, so its return is seen (and the
    degraded enrichments redone) even when no fresh lead needs it."""
    ai_provider_probe()
