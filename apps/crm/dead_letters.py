"""Pool C's dead letters: leads the CRM gave up on, kept (one open per lead) for an operator to
replay; a replay sends them again through the hand-off (a paused tier's wait in the ledger)."""

from collections import defaultdict
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from apps.control.ledger import leads_defer
from apps.control.models import DeferredKind, DeferredReason
from apps.control.state import shedding_current
from apps.crm.models import DeadLetter
from apps.crm.selectors import CRM_READY
from apps.leads.models import Lead, LeadStatus
from leadflow import handoff
from leadflow.outbound import text_storable

ERROR_MAX_CHARS = 2000


@transaction.atomic
def leads_dead_letter(trace_ids: list[str], stage: str, error: str, attempts: int) -> None:
    """Keep the CRM-ready, unsynced leads among trace_ids as dead letters (one open per lead)."""
    # Locked so a sync finishing at the same moment either wins (the lead is synced and
    # skipped here) or waits and then sees dead_lettered, which it may still deliver.
    leads = list(
        Lead.objects.select_for_update()
        .filter(CRM_READY, trace_id__in=trace_ids)
        .order_by("trace_id")
        .values_list("trace_id", "tenant_id")
    )
    if not leads:
        return
    error = text_storable(error, ERROR_MAX_CHARS)  # a CRM's reply may hold a NUL
    # The partial unique constraint skips leads that already have an open dead letter here.
    DeadLetter.objects.bulk_create(
        [
            DeadLetter(
                tenant_id=tenant_id, lead_id=trace_id, stage=stage, error=error, attempts=attempts
            )
            for trace_id, tenant_id in leads
        ],
        ignore_conflicts=True,
    )
    Lead.objects.filter(trace_id__in=[trace_id for trace_id, _ in leads]).update(
        status=LeadStatus.DEAD_LETTERED, updated_at=timezone.now()
    )


def dead_letters_replay(dead_letter_ids: Iterable[int]) -> int:
    """Re-enqueue the leads of the open dead letters among the ids; return how many leads.

    The dead letters stay open until the sync succeeds, which sets their replayed_at. Leads of
    a paused tier wait in the deferred ledger instead (a paused queue receives nothing), and
    are sent when it resumes.
    """
    rows = (
        DeadLetter.objects.filter(pk__in=list(dead_letter_ids), replayed_at__isnull=True)
        .order_by("lead__received_at")
        .values_list("tenant_id", "lead__tier", "lead_id")
    )
    chunks: dict[tuple[int, str], list[str]] = defaultdict(list)
    seen: set = set()
    for tenant_id, tier, trace_id in rows:
        if trace_id not in seen:  # a lead could be open at more than one stage
            seen.add(trace_id)
            chunks[(tenant_id, tier)].append(str(trace_id))

    shedding = shedding_current()
    for (_, tier), trace_ids in chunks.items():
        if tier in shedding.paused_tiers:
            leads_defer(DeferredKind.CRM_SYNC, trace_ids, shedding.mode, DeferredReason.PAUSED)
        else:
            handoff.send_to_sync(trace_ids, tier)
    return len(seen)
