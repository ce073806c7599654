"""The deferred ledger: work shed under overload is written down here, in PostgreSQL, and
closed when it is done (backfilled by apps/control/backfill.py). Nothing is shed silently."""

from django.db import transaction
from django.utils import timezone

from apps.control.models import DeferredKind, DeferredReason, DeferredWork
from apps.leads.models import Lead

# The lead flag that keeps each kind of shed work from being sent on by other paths.
_LEAD_FLAG = {
    DeferredKind.ENRICHMENT: "enrichment_deferred",
    DeferredKind.CRM_SYNC: "sync_deferred",
}


@transaction.atomic
def leads_defer(kind: str, trace_ids: list, mode: str, reason: str = DeferredReason.SHED) -> None:
    """Record that this kind of work was shed (or done degraded) for these leads, and flag
    the leads."""
    if not trace_ids:
        return
    leads = Lead.objects.filter(trace_id__in=trace_ids)
    DeferredWork.objects.bulk_create(
        [
            DeferredWork(
                kind=kind,
                reason=reason,
                tenant_id=tenant_id,
                lead_id=trace_id,
                mode=mode,
            )
            for trace_id, tenant_id in leads.values_list("trace_id", "tenant_id")
        ],
        ignore_conflicts=True,  # already open for a lead of a redelivered batch
    )
    leads.update(**{_LEAD_FLAG[kind]: True})


def leads_deferral_close(kind: str, trace_ids: list) -> None:
    """The work is done for these leads: close their open rows and clear the flag."""
    if not trace_ids:
        return
    now = timezone.now()
    DeferredWork.objects.filter(kind=kind, lead_id__in=trace_ids, done_at__isnull=True).update(
        done_at=now
    )
    Lead.objects.filter(trace_id__in=trace_ids, **{_LEAD_FLAG[kind]: True}).update(
        **{_LEAD_FLAG[kind]: False}
    )


def period_defer(
    kind: str, tenant_id: int, period_start, mode: str, reason: str = DeferredReason.SHED
) -> None:
    DeferredWork.objects.bulk_create(
        [
            DeferredWork(
                kind=kind, reason=reason, tenant_id=tenant_id, period_start=period_start, mode=mode
            )
        ],
        ignore_conflicts=True,
    )


def period_deferral_close(kind: str, tenant_id: int, period_start) -> None:
    DeferredWork.objects.filter(
        kind=kind, tenant_id=tenant_id, period_start=period_start, done_at__isnull=True
    ).update(done_at=timezone.now())
