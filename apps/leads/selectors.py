"""Reads of leads."""

import uuid

from apps.leads.models import Lead, LeadStatus


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def lead_status(tenant_id: int, trace_id: str) -> dict | None:
    """The lead's status and stage results; None if this tenant has no such lead in PostgreSQL."""
    try:
        trace_uuid = uuid.UUID(trace_id)
    except ValueError:
        return None
    lead = (
        Lead.objects.filter(trace_id=trace_uuid, tenant_id=tenant_id)
        .select_related("enrichment", "crm_sync")
        .first()
    )
    if lead is None:
        return None
    enrichment = getattr(lead, "enrichment", None)
    crm_sync = getattr(lead, "crm_sync", None)
    body = {
        "trace_id": str(lead.trace_id),
        "status": lead.status,
        "tier": lead.tier,
        "score": lead.score,
        "qualified": lead.is_qualified,
        "ai_degraded": lead.ai_degraded,
        "stages": {
            "qualification": {
                "score": lead.score,
                "qualified": lead.is_qualified,
                "reasons": lead.score_reasons,
            },
            "enrichment": (
                {
                    "provider": enrichment.provider,
                    "degraded": enrichment.degraded,
                    "data": enrichment.data,
                }
                if enrichment
                else None
            ),
            "crm": (
                {"adapter": crm_sync.adapter, "response": crm_sync.response} if crm_sync else None
            ),
        },
        "timestamps": {
            "received_at": _iso(lead.received_at),
            "qualified_at": _iso(lead.qualified_at),
            "enriched_at": _iso(lead.enriched_at),
            "synced_at": _iso(lead.synced_at),
        },
    }
    if lead.status == LeadStatus.DUPLICATE:
        body["duplicate_of"] = str(lead.duplicate_of)
    if lead.status == LeadStatus.FAILED:
        # Quarantined: the stage that failed and why, until an operator replays it.
        body["failure"] = {
            "stage": lead.failed_stage,
            "reason": lead.failed_reason,
            "failed_at": _iso(lead.failed_at),
        }
    return body
