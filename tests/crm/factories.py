"""Pool C's test data: leads written straight to PostgreSQL as pool A or B leaves them."""

import uuid

from django.utils import timezone

from apps.leads.models import Lead

SECRET = "whsec-test-0123456789"


def make_lead(tenant, status="enriched", is_qualified=True, tier="normal", **fields) -> Lead:
    defaults = {
        "email": f"{uuid.uuid4().hex[:8]}@example.com",
        "name": "Ada Lovelace",
        "company": "Analytical Engines",
        "source": "landing",
        "score": 80 if is_qualified else 20,
        "received_at": timezone.now(),
        "payload": {"utm": "spring"},
    }
    return Lead.objects.create(
        trace_id=uuid.uuid4(),
        tenant=tenant,
        tier=tier,
        status=status,
        is_qualified=is_qualified,
        **{**defaults, **fields},
    )


def ids(*leads: Lead) -> list[str]:
    return [str(lead.trace_id) for lead in leads]
