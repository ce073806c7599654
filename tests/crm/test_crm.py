"""Pool C's CRM sync against the real PostgreSQL, Redis (breakers, broker) and the HTTP double."""

import base64
import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from standardwebhooks import Webhook

from apps.crm.adapters import DELIVERY_HEADER, ID_HEADER
from apps.crm.dead_letters import dead_letters_replay, leads_dead_letter
from apps.crm.models import CrmSync, DeadLetter
from apps.crm.services import leads_sync
from apps.leads.models import Lead
from apps.tenants.models import webhook_signing_secrets
from leadflow.breakers import breaker_state
from leadflow.redis_conn import get_redis
from tests.factories import lead_for_crm_make, lead_ids

pytestmark = pytest.mark.django_db


def test_local_adapter_syncs_ready_leads_and_records_crm_sync(crm_tenant):
    tenant = crm_tenant()
    enriched = lead_for_crm_make(tenant, status="enriched")
    under_threshold = lead_for_crm_make(tenant, status="qualified", is_qualified=False)
    awaiting_enrichment = lead_for_crm_make(tenant, status="qualified", is_qualified=True)
    duplicate = lead_for_crm_make(tenant, status="duplicate")

    leads_sync(lead_ids([enriched, under_threshold, awaiting_enrichment, duplicate]))

    for lead in (enriched, under_threshold):
        lead.refresh_from_db()
        assert lead.status == "synced"
        assert lead.synced_at is not None
        assert lead.crm_sync.adapter == "local"
        assert lead.crm_sync.response == {"recorded": 2}
    for lead, status in ((awaiting_enrichment, "qualified"), (duplicate, "duplicate")):
        lead.refresh_from_db()
        assert lead.status == status
        assert not CrmSync.objects.filter(lead=lead).exists()


def test_webhook_delivers_leads_with_a_signature_the_receiver_can_verify(crm, webhook_tenant):
    leads = [lead_for_crm_make(webhook_tenant) for _ in range(3)]

    leads_sync(lead_ids(leads))

    [call] = crm.calls("crm")
    headers = {name.lower(): value for name, value in call["headers"].items()}
    [secret] = webhook_signing_secrets(webhook_tenant)
    assert Webhook(secret).verify(call["raw"], headers) == call["body"]
    assert headers[DELIVERY_HEADER.lower()] == headers[ID_HEADER]
    assert headers["content-type"] == "application/json"
    assert call["body"]["tenant"] == webhook_tenant.name
    sent = {lead["trace_id"]: lead for lead in call["body"]["leads"]}
    assert set(sent) == set(lead_ids(leads))
    first = sent[str(leads[0].trace_id)]
    assert first["email"] == leads[0].email
    assert first["score"] == 80 and first["is_qualified"] is True
    assert first["payload"] == {"utm": "spring"}
    assert first["enrichment"] is None
    assert first["received_at"] == leads[0].received_at.isoformat()
    for lead in leads:
        lead.refresh_from_db()
        assert lead.status == "synced"
        assert lead.crm_sync.adapter == "webhook"
        assert lead.crm_sync.response["status"] == 200
        assert lead.crm_sync.response["body"] == {"accepted": 3}


def test_webhook_payload_carries_the_leads_enrichment(crm, webhook_tenant):
    enrichment_models = pytest.importorskip("apps.enrichment.models")
    lead = lead_for_crm_make(webhook_tenant)
    data = {"domain": "example.com", "industry": "software", "company_size": "11-50"}
    enrichment_models.LeadEnrichment.objects.create(lead=lead, provider="local", data=data)

    leads_sync(lead_ids([lead]))

    [call] = crm.calls("crm")
    assert call["body"]["leads"][0]["enrichment"] == data


def test_redelivered_batch_sends_nothing_new_and_changes_nothing(crm, webhook_tenant):
    leads = [
        lead_for_crm_make(webhook_tenant),
        lead_for_crm_make(webhook_tenant, "qualified", False),
    ]
    leads_sync(lead_ids(leads))
    before = {lead.trace_id: lead for lead in Lead.objects.filter(trace_id__in=lead_ids(leads))}

    leads_sync(lead_ids(leads))

    assert len(crm.calls("crm")) == 1
    assert CrmSync.objects.filter(lead__in=leads).count() == 2
    for lead in Lead.objects.filter(trace_id__in=lead_ids(leads)):
        assert lead.status == "synced"
        assert lead.synced_at == before[lead.trace_id].synced_at
        assert lead.updated_at == before[lead.trace_id].updated_at


def test_batch_spanning_two_tenants_goes_to_each_tenants_crm(crm, webhook_tenant, crm_tenant):
    local_tenant = crm_tenant()
    remote = lead_for_crm_make(webhook_tenant)
    local = lead_for_crm_make(local_tenant)

    leads_sync(lead_ids([remote, local]))

    [call] = crm.calls("crm")
    assert [lead["trace_id"] for lead in call["body"]["leads"]] == lead_ids([remote])
    assert CrmSync.objects.get(lead=remote).adapter == "webhook"
    assert CrmSync.objects.get(lead=local).adapter == "local"


@pytest.mark.parametrize("status", [503, 429])
def test_crm_unavailable_leaves_leads_unsynced_for_a_retry(crm, webhook_tenant, status):
    crm.configure("crm", failure_rate=1.0, failure_status=status)
    lead = lead_for_crm_make(webhook_tenant)

    outcome = leads_sync(lead_ids([lead]))

    [retry] = outcome.retry
    assert retry.trace_ids == lead_ids([lead])
    assert retry.error.startswith("CrmUnavailable") and str(status) in retry.error
    lead.refresh_from_db()
    assert lead.status == "enriched"
    assert lead.synced_at is None
    assert not CrmSync.objects.filter(lead=lead).exists()


def test_crm_slower_than_its_deadline_is_unavailable(crm, webhook_tenant, settings):
    settings.CRM_TIMEOUT_SECONDS = 0.3
    crm.configure("crm", latency_ms=1500)
    lead = lead_for_crm_make(webhook_tenant)

    [retry] = leads_sync(lead_ids([lead])).retry

    assert "no complete reply within 0.3s" in retry.error
    lead.refresh_from_db()
    assert lead.status == "enriched"


def test_unreachable_crm_is_unavailable(crm_tenant):
    # Port 9 (discard) on localhost: nothing listens, the connection is refused at once.
    tenant = crm_tenant(crm_webhook_url="http://127.0.0.1:9/crm/hook")
    lead = lead_for_crm_make(tenant)

    [retry] = leads_sync(lead_ids([lead])).retry

    assert "unreachable" in retry.error


def test_breaker_opens_after_fail_max_failures_then_fails_fast_without_http(
    crm, webhook_tenant, settings
):
    crm.configure("crm", failure_rate=1.0, failure_status=503)
    lead = lead_for_crm_make(webhook_tenant)

    for _ in range(settings.BREAKER_FAIL_MAX):
        assert leads_sync(lead_ids([lead])).retry
    assert len(crm.calls("crm")) == settings.BREAKER_FAIL_MAX
    assert breaker_state(f"crm:{webhook_tenant.id}") == "open"

    crm.reset()  # the CRM is healthy again, but the breaker waits out its reset timeout
    [retry] = leads_sync(lead_ids([lead])).retry
    assert "breaker open" in retry.error
    assert crm.calls("crm") == []
    lead.refresh_from_db()
    assert lead.status == "enriched"


def test_rejection_dead_letters_at_once_and_does_not_trip_breaker(crm, webhook_tenant, settings):
    crm.configure("crm", failure_rate=1.0, failure_status=422)
    leads = [lead_for_crm_make(webhook_tenant) for _ in range(settings.BREAKER_FAIL_MAX + 1)]

    for lead in leads:
        assert leads_sync(lead_ids([lead])).retry == []

    assert len(crm.calls("crm")) == settings.BREAKER_FAIL_MAX + 1
    assert breaker_state(f"crm:{webhook_tenant.id}") == "closed"
    for lead in leads:
        lead.refresh_from_db()
        assert lead.status == "dead_lettered"
        letter = DeadLetter.objects.get(lead=lead)
        assert (letter.attempts, letter.error[:15]) == (1, "CrmRejected: CR")
        assert "422" in letter.error


def test_dead_letter_sets_dead_lettered_once_and_skips_synced_leads(crm_tenant):
    tenant = crm_tenant()
    first, second = lead_for_crm_make(tenant), lead_for_crm_make(tenant, "qualified", False)
    synced = lead_for_crm_make(tenant)
    leads_sync(lead_ids([synced]))

    leads_dead_letter(
        lead_ids([first, second, synced]), stage="crm", error="CrmUnavailable: 503", attempts=4
    )
    leads_dead_letter(lead_ids([first, second, synced]), stage="crm", error="again", attempts=4)

    letters = DeadLetter.objects.filter(tenant=tenant)
    assert sorted(str(letter.lead_id) for letter in letters) == sorted(lead_ids([first, second]))
    assert {(letter.stage, letter.error, letter.attempts) for letter in letters} == {
        ("crm", "CrmUnavailable: 503", 4)
    }
    assert all(letter.replayed_at is None for letter in letters)
    for lead in (first, second):
        lead.refresh_from_db()
        assert lead.status == "dead_lettered"
    synced.refresh_from_db()
    assert synced.status == "synced"


def test_dead_letter_leaves_leads_still_waiting_for_enrichment_alone(crm_tenant):
    tenant = crm_tenant()
    waiting = lead_for_crm_make(tenant, status="qualified", is_qualified=True)

    leads_dead_letter(lead_ids([waiting]), stage="crm", error="boom", attempts=1)

    waiting.refresh_from_db()
    assert waiting.status == "qualified"
    assert not DeadLetter.objects.filter(lead=waiting).exists()


def _broker_messages(queue: str, task_name: str = "pool_c.sync_leads") -> list[tuple[bytes, list]]:
    """(raw message, task args) for each message of task_name waiting in a Celery Redis queue."""
    found = []
    for raw in get_redis().lrange(queue, 0, -1):
        message = json.loads(raw)
        if message["headers"].get("task") == task_name:
            args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            found.append((raw, args))
    return found


@pytest.fixture
def broker_cleanup():
    """Remove the messages a test enqueued (those naming its trace ids) from pool C's queues."""
    trace_ids: set[str] = set()
    yield trace_ids
    for queue in ("c.critical", "c.normal", "c.low"):
        for raw, args in _broker_messages(queue):
            if trace_ids & set(args[0]):
                get_redis().lrem(queue, 1, raw)


def test_replay_enqueues_dead_letters_and_a_healthy_sync_closes_them(
    crm, webhook_tenant, broker_cleanup
):
    normal = [lead_for_crm_make(webhook_tenant, tier="normal") for _ in range(2)]
    critical = lead_for_crm_make(webhook_tenant, tier="critical")
    all_ids = lead_ids([*normal, critical])
    broker_cleanup.update(all_ids)
    leads_dead_letter(all_ids, stage="crm", error="CrmUnavailable: 503", attempts=4)
    letters = list(DeadLetter.objects.filter(lead_id__in=all_ids).values_list("pk", flat=True))

    assert dead_letters_replay(letters) == 3

    normal_batches = [
        args for _, args in _broker_messages("c.normal") if set(args[0]) & set(all_ids)
    ]
    critical_batches = [
        args for _, args in _broker_messages("c.critical") if set(args[0]) & set(all_ids)
    ]
    assert [(sorted(trace_ids), tier) for trace_ids, tier in normal_batches] == [
        (sorted(lead_ids(normal)), "normal")
    ]
    assert critical_batches == [[lead_ids([critical]), "critical"]]
    # Enqueued, not yet delivered: the dead letters stay open until the sync succeeds.
    assert DeadLetter.objects.filter(pk__in=letters, replayed_at__isnull=True).count() == 3

    for trace_ids, _tier in normal_batches + critical_batches:
        leads_sync(trace_ids)  # what pool C's worker does with each message

    assert {lead["trace_id"] for call in crm.calls("crm") for lead in call["body"]["leads"]} == set(
        all_ids
    )
    assert set(Lead.objects.filter(trace_id__in=all_ids).values_list("status", flat=True)) == {
        "synced"
    }
    assert DeadLetter.objects.filter(pk__in=letters, replayed_at__isnull=False).count() == 3
    assert dead_letters_replay(letters) == 0  # replayed dead letters are not replayed again


def test_failed_replay_keeps_the_dead_letter_open(crm, webhook_tenant):
    lead = lead_for_crm_make(webhook_tenant)
    leads_dead_letter(lead_ids([lead]), stage="crm", error="CrmUnavailable: 503", attempts=4)
    crm.configure("crm", failure_rate=1.0, failure_status=503)

    assert leads_sync(lead_ids([lead])).retry

    lead.refresh_from_db()
    assert lead.status == "dead_lettered"
    assert DeadLetter.objects.get(lead=lead).replayed_at is None


def test_replay_splits_a_large_set_into_messages_of_at_most_500(crm_tenant, broker_cleanup):
    tenant = crm_tenant()
    received_at = timezone.now() - timedelta(minutes=5)
    leads = Lead.objects.bulk_create(
        [
            Lead(
                trace_id=uuid.uuid4(), tenant=tenant, tier="low", status="enriched",
                email=f"bulk{n}@example.com", received_at=received_at, is_qualified=True,
            )
            for n in range(501)
        ]
    )  # fmt: skip
    all_ids = lead_ids(leads)
    broker_cleanup.update(all_ids)
    leads_dead_letter(all_ids, stage="crm", error="CrmRejected: 422", attempts=1)

    assert (
        dead_letters_replay(DeadLetter.objects.filter(tenant=tenant).values_list("pk", flat=True))
        == 501
    )

    batches = [args for _, args in _broker_messages("c.low") if set(args[0]) & set(all_ids)]
    assert sorted(len(trace_ids) for trace_ids, _ in batches) == [1, 500]
    assert {trace_id for trace_ids, _ in batches for trace_id in trace_ids} == set(all_ids)


def test_last_attempt_dead_letters_the_group(crm, webhook_tenant, settings):
    crm.configure("crm", failure_rate=1.0, failure_status=503)
    lead = lead_for_crm_make(webhook_tenant)

    outcome = leads_sync(lead_ids([lead]), attempt=settings.CRM_MAX_RETRIES)

    assert outcome.retry == []
    lead.refresh_from_db()
    assert lead.status == "dead_lettered"
    letter = DeadLetter.objects.get(lead=lead)
    assert letter.attempts == settings.CRM_MAX_RETRIES + 1
    assert letter.error.startswith("CrmUnavailable")


def test_admin_lists_dead_letters_and_replays_the_selected_ones(
    admin_client, crm_tenant, broker_cleanup
):
    tenant = crm_tenant()
    lead = lead_for_crm_make(tenant)
    broker_cleanup.update(lead_ids([lead]))
    leads_dead_letter(
        lead_ids([lead]), stage="crm", error="CrmUnavailable: " + "x" * 200, attempts=4
    )
    letter = DeadLetter.objects.get(lead=lead)

    listing = admin_client.get("/admin/crm/deadletter/", {"state": "open"})
    assert listing.status_code == 200
    assert str(lead.trace_id) in listing.content.decode()
    assert admin_client.get(f"/admin/crm/deadletter/{letter.pk}/change/").status_code == 200

    response = admin_client.post(
        "/admin/crm/deadletter/",
        {"action": "replay_selected", "_selected_action": [letter.pk]},
        follow=True,
    )

    assert "Re-enqueued 1 lead(s) for CRM sync." in response.content.decode()
    assert [args for _, args in _broker_messages("c.normal") if args[0] == lead_ids([lead])] == [
        [lead_ids([lead]), "normal"]
    ]
    leads_sync(lead_ids([lead]))
    assert admin_client.get("/admin/crm/deadletter/", {"state": "replayed"}).status_code == 200
    assert admin_client.get("/admin/crm/crmsync/").status_code == 200
    assert admin_client.get(f"/admin/crm/crmsync/{lead.trace_id}/change/").status_code == 200
