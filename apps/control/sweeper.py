"""The stalled-lead sweeper: a lead stored by pool A that has not moved on lost its message to B
or C (kombu's Redis transport can drop a message popped by a worker killed before it recorded it
as unacked: BRPOP and the record are two round trips). Send those leads on again; every stage
is idempotent.

Two sweeps: orphans, leads waiting LEADFLOW_ORPHAN_LEAD_SECONDS (30 s) that no message in B's
or C's queues carries, waiting or held by a worker (the watermarks keep those queues short, and
only their messages are decoded), so a lost message costs seconds; and, as the backstop for
anything else, every lead waiting LEADFLOW_STALLED_LEAD_SECONDS (900 s), carried or not.

A paused tier's stalled leads are left where they are (stored, and counted by status): its
queues receive nothing until it resumes, and the first sweep after that sends them on."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.leads.models import Lead, LeadStatus
from leadflow import handoff
from leadflow.broker import trace_ids_carried
from leadflow.queues import TIERS, queue_name
from leadflow.redis_conn import get_redis

SWEEP_LIMIT = 5000  # leads per sweep; the next sweep takes the rest
# The tasks whose first argument is the trace ids they carry to B and C.
STAGE_TASKS = frozenset({handoff.ENRICH_TASK, handoff.ENRICH_DEFERRED_TASK, handoff.SYNC_TASK})


def stalled_leads_resend(
    paused_tiers: frozenset[str] = frozenset(), resent: frozenset[str] = frozenset()
) -> int:
    """Re-enqueue leads waiting for B or C longer than LEADFLOW_STALLED_LEAD_SECONDS, but
    for those of the paused tiers and those just `resent` as orphans."""
    rows = _waiting(settings.STALLED_LEAD_SECONDS, paused_tiers)
    return _resend([row for row in rows if str(row[0]) not in resent])


def orphaned_leads_resend(paused_tiers: frozenset[str] = frozenset()) -> list[str]:
    """Re-enqueue leads waiting for B or C longer than LEADFLOW_ORPHAN_LEAD_SECONDS that no
    message carries; returns their trace ids."""
    rows = _waiting(settings.ORPHAN_LEAD_SECONDS, paused_tiers)
    if not rows:
        return []
    queues = [queue_name(pool, tier) for pool in ("b", "c") for tier in TIERS]
    carried = trace_ids_carried(get_redis(), queues, STAGE_TASKS)
    orphans = [row for row in rows if str(row[0]) not in carried]
    _resend(orphans)
    return [str(row[0]) for row in orphans]


def _waiting(seconds: float, paused_tiers: frozenset[str]) -> list[tuple]:
    """Leads stored by pool A and waiting longer than `seconds` for B or C, but for the paused
    tiers' and the work shed to the deferred ledger."""
    cutoff = timezone.now() - timedelta(seconds=seconds)
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
    return list(
        Lead.objects.filter(waiting_enrichment | for_crm)
        .filter(sync_deferred=False)
        .exclude(tier__in=paused_tiers)
        .values_list("trace_id", "status", "is_qualified", "enrichment_deferred", "tier")[
            :SWEEP_LIMIT
        ]
    )


def _resend(rows: list[tuple]) -> int:
    groups: dict[tuple, list[str]] = {}
    for trace_id, status, is_qualified, enrichment_deferred, tier in rows:
        to_enrich = status == LeadStatus.QUALIFIED and is_qualified and not enrichment_deferred
        pool = "b" if to_enrich else "c"
        groups.setdefault((pool, tier), []).append(str(trace_id))
    for (pool, tier), trace_ids in groups.items():
        (handoff.send_to_enrich if pool == "b" else handoff.send_to_sync)(trace_ids, tier)
    return sum(len(ids) for ids in groups.values())
