"""Test data in one place: tenants (through the service, with an API key) and leads written
straight to PostgreSQL as a stage leaves them. Plain functions; every name unique per call, so
tests and earlier runs never collide."""

import uuid
from collections.abc import Iterable

from django.utils import timezone

from apps.leads.models import Lead, LeadStatus


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tenant_make(prefix: str = "tenant", **fields):
    """A tenant named `prefix-<random>` with an API key: (tenant, raw key)."""
    from apps.tenants.services import tenant_create

    return tenant_create(unique(prefix), **fields)


def lead_make(
    tenant,
    email: str | None = None,
    status: str = LeadStatus.QUALIFIED,
    *,
    tier: str = "normal",
    is_qualified: bool = True,
    **fields,
) -> Lead:
    """A lead as pool A stores it: only the fields every lead has, plus `fields`."""
    return Lead.objects.create(
        trace_id=uuid.uuid4(),
        tenant=tenant,
        tier=tier,
        status=status,
        is_qualified=is_qualified,
        email=email or f"{uuid.uuid4().hex[:8]}@example.com",
        **{"received_at": timezone.now(), **fields},
    )


def lead_for_crm_make(
    tenant, status: str = LeadStatus.ENRICHED, is_qualified: bool = True, tier="normal", **fields
) -> Lead:
    """A lead with every field pool C delivers (name, company, source, score, payload)."""
    defaults = {
        "name": "Ada Lovelace",
        "company": "Analytical Engines",
        "source": "landing",
        "score": 80 if is_qualified else 20,
        "payload": {"utm": "spring"},
    }
    return lead_make(
        tenant, status=status, tier=tier, is_qualified=is_qualified, **{**defaults, **fields}
    )


def lead_ids(leads: Iterable[Lead]) -> list[str]:
    """The leads' trace ids, as the stages take them."""
    return [str(lead.trace_id) for lead in leads]
