"""Pool B's test data: leads written straight to PostgreSQL as pool A leaves them."""

import uuid

from django.utils import timezone

from apps.leads.models import Lead


def make_lead(tenant, email: str, status: str = "qualified") -> Lead:
    return Lead.objects.create(
        trace_id=uuid.uuid4(),
        tenant=tenant,
        tier="normal",
        status=status,
        is_qualified=True,
        email=email,
        received_at=timezone.now(),
    )


def trace_ids(leads: list[Lead]) -> list[str]:
    return [str(lead.trace_id) for lead in leads]
