"""A poison lead in a shared batch fails alone: the live platform, one batch holding a noisy
tenant's unstorable leads and a clean tenant's leads sent at the same moment.

The poison leads are written into the noisy tenant's inbox as an older intake admitted them
(today's refuses them at the door); the clean tenant's are posted over HTTP. The control process
is stopped so that one dispatch pass, run here, puts them all in one batch.
"""

import time
import uuid
from collections import Counter

import orjson
import pytest
from django.db import connection
from django.urls import reverse

from apps.control.dispatcher import Dispatcher
from apps.leads.models import Lead, LeadStatus
from leadflow import redis_keys
from leadflow.redis_conn import get_redis
from tests.live.api import auth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

POISON_FIELDS = [
    {"name": "x\x00y"},
    {"company": "Acme\x00"},
    {"payload": {"note": "a\x00b"}},
    {"payload": {"k\x00ey": "v"}},
    {"payload": {"a": [{"b": {"c": ["deep \x00"]}}]}},
    {"email": "İ" * 130 + "@x.io"},
    {"name": "\x00"},
    {"source": "ads\x00"},
    {"region": "g\x00b"},
    {"campaign_id": "\x00spring"},
]


def poison_push(tenant_id: int, fields: dict) -> str:
    """Write an inbox entry as admission does (apps/intake/lua/admit.lua), bypassing the intake."""
    trace_id = str(uuid.uuid4())
    entry = {
        "trace_id": trace_id,
        "tenant_id": tenant_id,
        "received_at": time.time(),
        "email": f"poison-{trace_id[:8]}@acme.io",
        **fields,
        "tier": "normal",
    }
    pipe = get_redis().pipeline(transaction=True)
    pipe.rpush(redis_keys.inbox_key("normal", tenant_id), orjson.dumps(entry))
    pipe.sadd(redis_keys.active_tenants_key("normal"), tenant_id)
    pipe.hincrby(redis_keys.BACKLOG_KEY, "normal", 1)
    pipe.execute()
    return trace_id


def test_poison_leads_fail_alone_and_the_clean_tenant_in_their_batch_is_synced(
    api, make_tenant, control_stopped
):
    noisy, noisy_key = make_tenant("noisy")
    clean, clean_key = make_tenant("clean")
    poison_ids = [poison_push(noisy.id, fields) for fields in POISON_FIELDS]
    clean_leads = [{"email": f"buyer-{i}@clean-{uuid.uuid4().hex[:6]}.com"} for i in range(40)]
    response = api.post("/api/v1/leads/batch", json={"leads": clean_leads}, headers=auth(clean_key))
    assert response.status_code == 202, response.text
    clean_ids = [result["trace_id"] for result in response.json()["results"]]

    dispatched = Dispatcher().dispatch_once()
    assert dispatched >= 50  # one pass, one shared batch (leads left by other tests may join)

    def synced_clean() -> int:
        return Lead.objects.filter(trace_id__in=clean_ids, status=LeadStatus.SYNCED).count()

    wait_until(lambda: synced_clean() == 40, timeout=60, message=f"clean synced: {synced_clean()}")
    failed = Lead.objects.filter(trace_id__in=poison_ids)
    assert Counter(lead.status for lead in failed) == {LeadStatus.FAILED: len(poison_ids)}
    assert {lead.failed_stage for lead in failed} == {"qualification"}
    assert not get_redis().zcard(redis_keys.INFLIGHT_KEY)  # the batch was released, not republished

    # The tenant reads why over the API; the other tenant cannot see it.
    body = api.get(f"/api/v1/leads/{poison_ids[0]}", headers=auth(noisy_key)).json()
    assert body["status"] == "failed"
    assert body["failure"]["stage"] == "qualification" and "name" in body["failure"]["reason"]
    assert api.get(f"/api/v1/leads/{poison_ids[0]}", headers=auth(clean_key)).status_code == 404

    # Accounting closes per tenant: accepted = synced + failed + duplicate + dead-lettered.
    for tenant, accepted in ((noisy, poison_ids), (clean, clean_ids)):
        statuses = Counter(Lead.objects.filter(tenant=tenant).values_list("status", flat=True))
        assert sum(statuses.values()) == len(accepted)
        assert set(statuses) <= {"synced", "failed", "duplicate", "dead_lettered"}


@pytest.fixture
def poison_rule(transactional_db):
    """A rule of PostgreSQL's that pool A does not know (a CHECK constraint), then its fix."""
    name = f"poison-{uuid.uuid4().hex[:8]}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"ALTER TABLE leads_lead ADD CONSTRAINT test_poison CHECK (company <> '{name}')"
        )

    def fix() -> None:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE leads_lead DROP CONSTRAINT IF EXISTS test_poison")

    yield name, fix
    fix()


def test_an_operator_replays_a_failed_lead_after_the_fix_and_it_is_synced(
    api, make_tenant, control_stopped, poison_rule, admin_client
):
    company, fix = poison_rule
    tenant, key = make_tenant("replayed")
    trace_id = poison_push(tenant.id, {"company": company})
    Dispatcher().dispatch_once()
    wait_until(
        lambda: Lead.objects.filter(trace_id=trace_id, status=LeadStatus.FAILED).exists(),
        timeout=60,
        message="the poison lead was not quarantined",
    )
    assert "CheckViolation" in Lead.objects.get(trace_id=trace_id).failed_reason

    fix()
    response = admin_client.post(
        reverse("admin:leads_failedlead_changelist"),
        {"action": "replay_selected", "_selected_action": [trace_id]},
    )
    assert response.status_code == 302
    lead = wait_until(
        lambda: Lead.objects.filter(trace_id=trace_id, status=LeadStatus.SYNCED).first(),
        timeout=60,
        message="the replayed lead was not synced",
    )
    assert (lead.company, lead.failed_stage, lead.failed_reason) == (company, "", "")
