"""A lead quarantined by pool B or C (a failure of its own) is replayed to that stage by the
operator and reaches synced: the live platform, control running."""

import uuid

import pytest

from apps.leads.models import Lead, LeadStatus
from apps.leads.quarantine import failed_leads_replay, leads_quarantine
from tests.live.api import auth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("stage", ["enrichment", "crm"])
def test_a_lead_quarantined_by_pool_b_or_c_is_replayed_to_that_stage(api, make_tenant, stage):
    tenant, key = make_tenant("later-stage")
    lead = {
        "email": f"buyer@acme-{uuid.uuid4().hex[:6]}.com",
        "company": "Acme",
        "phone": "+1 415 555 0100",
        "source": "google_ads",
        "region": "us",
    }
    trace_id = api.post("/api/v1/leads", json=lead, headers=auth(key)).json()["trace_id"]
    wait_until(
        lambda: Lead.objects.filter(trace_id=trace_id, status=LeadStatus.SYNCED).exists(),
        timeout=60,
        message="not synced",
    )
    # As pool B or C would after a failure of this lead's own (a bug, since fixed).
    Lead.objects.filter(trace_id=trace_id).update(
        status=LeadStatus.ENRICHED if stage == "crm" else LeadStatus.QUALIFIED
    )
    assert leads_quarantine([trace_id], stage, "RuntimeError: a bug", "RuntimeError") == 1
    body = api.get(f"/api/v1/leads/{trace_id}", headers=auth(key)).json()
    assert body["failure"] == {
        "stage": stage,
        "reason": "RuntimeError: a bug",
        "failed_at": body["failure"]["failed_at"],
    }

    assert failed_leads_replay([trace_id]) == 1
    wait_until(
        lambda: Lead.objects.filter(trace_id=trace_id, status=LeadStatus.SYNCED).exists(),
        timeout=60,
        message=f"the replayed lead did not reach synced from {stage}",
    )
