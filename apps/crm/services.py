"""Pool C's writes: deliver ready leads to their tenant's CRM, dead-letter the ones that gave up,
and replay dead letters. Every function is idempotent by trace_id (delivery is at-least-once).
"""

from collections import defaultdict
from collections.abc import Iterable

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.control.ledger import leads_defer, leads_deferral_close
from apps.control.models import DeferredKind, DeferredReason
from apps.control.state import shedding_current
from apps.crm.adapters import adapter_for
from apps.crm.models import CrmSync, DeadLetter
from apps.crm.pace import crm_pace_wait
from apps.leads.models import Lead, LeadStatus
from leadflow.logs import log_context

# Ready for the CRM: enriched; or scored under the threshold (those skip enrichment); or
# qualified with its enrichment shed under overload (it comes later, in a second delivery); or
# dead-lettered (a replay). A qualified lead that passed is still waiting for enrichment.
CRM_READY = (
    Q(status=LeadStatus.ENRICHED)
    | Q(status=LeadStatus.QUALIFIED, is_qualified=False)
    | Q(status=LeadStatus.QUALIFIED, enrichment_deferred=True)
    | Q(status=LeadStatus.DEAD_LETTERED)
)


def _enrichment_data(lead: Lead) -> dict | None:
    # A missing row raises RelatedObjectDoesNotExist, an AttributeError: getattr covers both.
    enrichment = getattr(lead, "enrichment", None)
    return getattr(enrichment, "data", None) if enrichment is not None else None


def lead_crm_payload(lead: Lead) -> dict:
    """What the CRM receives for one lead."""
    return {
        "trace_id": str(lead.trace_id),
        "email": lead.email,
        "name": lead.name,
        "phone": lead.phone,
        "company": lead.company,
        "source": lead.source,
        "campaign_id": lead.campaign_id,
        "region": lead.region,
        "tier": lead.tier,
        "score": lead.score,
        "is_qualified": lead.is_qualified,
        "ai_degraded": lead.ai_degraded,
        "enrichment": _enrichment_data(lead),
        "payload": lead.payload,
        "received_at": lead.received_at.isoformat(),
    }


def leads_sync(trace_ids: list[str], resend: bool = False) -> None:
    """Deliver the CRM-ready, not yet synced leads among trace_ids; mark them synced.

    With resend, synced leads are delivered again too (a backfilled enrichment). Each tenant's
    leads wait for its CRM's pace (crm_pace_wait; a webhook, not the local adapter).
    CrmUnavailable and CrmRejected propagate: the task retries the first and dead-letters on
    the second. Tenants already delivered in this call stay recorded.
    """
    ready = CRM_READY | Q(status=LeadStatus.SYNCED) if resend else CRM_READY
    leads = Lead.objects.filter(ready, trace_id__in=trace_ids).select_related(
        "tenant", "enrichment"
    )

    by_tenant: dict[int, list[Lead]] = defaultdict(list)
    for lead in leads.order_by("received_at"):
        by_tenant[lead.tenant_id].append(lead)

    for tenant_leads in by_tenant.values():
        tenant = tenant_leads[0].tenant
        with log_context(tenant=tenant.id):
            adapter = adapter_for(tenant)
            if adapter.paced:
                crm_pace_wait(tenant.id, len(tenant_leads))
            response = adapter.deliver(tenant, [lead_crm_payload(lead) for lead in tenant_leads])
            _record_delivered([lead.trace_id for lead in tenant_leads], adapter.name, response)


@transaction.atomic
def _record_delivered(trace_ids: list, adapter_name: str, response: dict) -> None:
    now = timezone.now()
    # A concurrent delivery of the same leads may have recorded first: keep its row.
    CrmSync.objects.bulk_create(
        [
            CrmSync(lead_id=trace_id, adapter=adapter_name, response=response, synced_at=now)
            for trace_id in trace_ids
        ],
        ignore_conflicts=True,
    )
    Lead.objects.filter(CRM_READY, trace_id__in=trace_ids).update(
        status=LeadStatus.SYNCED, synced_at=now
    )
    DeadLetter.objects.filter(lead_id__in=trace_ids, replayed_at__isnull=True).update(
        replayed_at=now
    )
    leads_deferral_close(DeferredKind.CRM_SYNC, trace_ids)


@transaction.atomic
def leads_dead_letter(trace_ids: list[str], stage: str, error: str, attempts: int) -> None:
    """Keep the CRM-ready, unsynced leads among trace_ids as dead letters (one open per lead)."""
    # Locked so a sync finishing at the same moment either wins (the lead is synced and
    # skipped here) or waits and then sees dead_lettered, which it may still deliver.
    leads = list(
        Lead.objects.select_for_update()
        .filter(CRM_READY, trace_id__in=trace_ids)
        .values_list("trace_id", "tenant_id")
    )
    if not leads:
        return
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
        status=LeadStatus.DEAD_LETTERED
    )


def dead_letters_replay(dead_letter_ids: Iterable[int]) -> int:
    """Re-enqueue the leads of the open dead letters among the ids; return how many leads.

    The dead letters stay open until the sync succeeds, which sets their replayed_at. Leads of
    a paused tier wait in the deferred ledger instead (a paused queue receives nothing), and
    are sent when it resumes.
    """
    from workers.pool_c import sync_leads  # workers import this module
    from workers.queues import send_in_batches

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
            send_in_batches(sync_leads, "c", tier, trace_ids)
    return len(seen)
