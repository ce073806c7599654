"""Where pool A sends a batch's leads under the current shedding, and what it writes down.

Qualification always runs. After it, a lead goes to enrichment (B) or straight to the CRM
(C); under overload its enrichment may be shed (THIN: non-critical leads; an emergency: all),
and in SEVERE only a sample of non-critical leads goes on at all. Whatever is shed goes into
the deferred ledger, to be backfilled.

A batch of a paused tier (one pool A was already running when the pause began, or took from a
queue just before its consumer was cancelled) goes nowhere: its leads wait in the ledger, for
enrichment and CRM sync alike, and are backfilled when the tier resumes.
"""

from dataclasses import dataclass, field

from apps.control.ledger import leads_defer
from apps.control.models import DeferredKind, DeferredReason
from apps.control.modes import Shedding


@dataclass
class Route:
    to_enrich: list[str] = field(default_factory=list)
    to_sync: list[str] = field(default_factory=list)


def leads_route(to_enrich: list[str], to_sync: list[str], tier: str, shedding: Shedding) -> Route:
    """Split qualified leads (to_enrich) and leads under the threshold (to_sync) by shedding."""
    route = Route()
    if tier in shedding.paused_tiers:
        # The backfill sends the enrichment first, which delivers the lead to the CRM after.
        leads_defer(DeferredKind.ENRICHMENT, to_enrich, shedding.mode, DeferredReason.PAUSED)
        leads_defer(
            DeferredKind.CRM_SYNC, to_enrich + to_sync, shedding.mode, DeferredReason.PAUSED
        )
        return route
    enrichment_shed: list[str] = []
    sync_shed: list[str] = []
    for trace_id in to_enrich:
        goes_on = shedding.goes_on(tier, trace_id)
        if goes_on and shedding.enrichment_runs(tier):
            route.to_enrich.append(trace_id)
            continue
        # Shed enrichment, or sampled out: the enrichment waits in the ledger, and the lead
        # goes to the CRM now without it (or waits too, when sampled out).
        enrichment_shed.append(trace_id)
        (route.to_sync if goes_on else sync_shed).append(trace_id)
    for trace_id in to_sync:
        (route.to_sync if shedding.goes_on(tier, trace_id) else sync_shed).append(trace_id)
    leads_defer(DeferredKind.ENRICHMENT, enrichment_shed, shedding.mode)
    leads_defer(DeferredKind.CRM_SYNC, sync_shed, shedding.mode)
    return route
