"""Backfill: the deferred ledger's open work is sent to the pools' LOW queues, in NORMAL mode
while LOW runs, a bounded number of rows per pass. A row sent and not done within
LEADFLOW_BACKFILL_RETRY_SECONDS is sent again (its stage is idempotent)."""

from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.control.ledger import period_defer
from apps.control.models import DeferredKind, DeferredReason, DeferredWork
from apps.control.modes import Shedding
from leadflow import handoff


def deferred_backfill() -> int:
    """Send up to LEADFLOW_BACKFILL_BATCH open ledger rows on; returns how many."""
    now = timezone.now()
    retry_before = now - timedelta(seconds=settings.BACKFILL_RETRY_SECONDS)
    due = Q(sent_at__isnull=True) | Q(sent_at__lt=retry_before)
    rows = list(
        DeferredWork.objects.filter(due, done_at__isnull=True)
        # A lead waiting for both goes to enrichment first, which delivers it after.
        .exclude(kind=DeferredKind.CRM_SYNC, lead__enrichment_deferred=True)
        .order_by("created_at")
        .values_list("id", "kind", "tenant_id", "lead_id", "period_start")[
            : settings.BACKFILL_BATCH
        ]
    )
    lead_ids: dict[str, list[str]] = defaultdict(list)
    for _, kind, tenant_id, lead_id, period_start in rows:
        if lead_id is not None:
            lead_ids[kind].append(str(lead_id))
        else:
            handoff.send_report(tenant_id, kind, period_start)
    handoff.send_to_enrich(lead_ids[DeferredKind.ENRICHMENT], "low", deferred=True)
    handoff.send_to_sync(lead_ids[DeferredKind.CRM_SYNC], "low")
    DeferredWork.objects.filter(id__in=[row[0] for row in rows]).update(sent_at=now)
    return len(rows)


def report_sender(shedding: Shedding):
    """What reports_schedule sends a due report with: to pool C's LOW queue, or, while LOW is
    paused (its queues receive nothing), to the ledger, to be built when LOW resumes."""
    if "low" not in shedding.paused_tiers:
        return handoff.send_report

    def report_hold(tenant_id: int, kind: str, period_start) -> None:
        period_defer(kind, tenant_id, period_start, shedding.mode, DeferredReason.PAUSED)

    return report_hold
