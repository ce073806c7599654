"""The stalled-lead sweeper: a lead stored by pool A that has not moved on for a long time lost
its message to B or C (kombu's Redis transport can drop a message popped by a worker killed
before it recorded it as unacked). Send those leads on again; every stage is idempotent.

A paused tier's stalled leads are left where they are (stored, and counted by status): its
queues receive nothing until it resumes, and the first sweep after that sends them on."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.leads.models import Lead, LeadStatus
from leadflow import handoff

SWEEP_LIMIT = 5000  # leads per sweep; the next sweep takes the rest


def stalled_leads_resend(paused_tiers: frozenset[str] = frozenset()) -> int:
    """Re-enqueue leads waiting for B or C longer than LEADFLOW_STALLED_LEAD_SECONDS, but
    for those of the paused tiers."""
    cutoff = timezone.now() - timedelta(seconds=settings.STALLED_LEAD_SECONDS)
    # Work shed under overload is not stalled: it waits in the deferred ledger for backfill.
    waiting_enrichment = Q(
        status=LeadStatus.QUALIFIED,
        is_qualified=True,
        enrichment_deferred=False,
        qualified_at__lt=cutoff,
    )
    for_crm = Q(status=LeadStatus.QUALIFIED, qualified_at__lt=cutoff) & (
        Q(is_qualified=False) | Q(enrichment_deferred=True)
    ) | Q(status=LeadStatus.ENRICHED, enriched_at__lt=cutoff)
    groups: dict[tuple, list[str]] = {}
    rows = (
        Lead.objects.filter(waiting_enrichment | for_crm)
        .filter(sync_deferred=False)
        .exclude(tier__in=paused_tiers)
        .values_list("trace_id", "status", "is_qualified", "enrichment_deferred", "tier")[
            :SWEEP_LIMIT
        ]
    )
    for trace_id, status, is_qualified, enrichment_deferred, tier in rows:
        to_enrich = status == LeadStatus.QUALIFIED and is_qualified and not enrichment_deferred
        pool = "b" if to_enrich else "c"
        groups.setdefault((pool, tier), []).append(str(trace_id))
    for (pool, tier), trace_ids in groups.items():
        (handoff.send_to_enrich if pool == "b" else handoff.send_to_sync)(trace_ids, tier)
    return sum(len(ids) for ids in groups.values())
