"""Pool A's write path (apps.leads.services.leads_qualify) against the real PostgreSQL."""

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, connections

from apps.leads import rows, services
from apps.leads.models import Lead, LeadStatus
from apps.leads.services import SEMANTIC_DEDUP_WINDOW, leads_qualify
from tests.factories import tenant_make

# Each test's writes roll back with its transaction (leads_qualify's atomic block is a
# savepoint inside it), except the concurrency test, which needs real commits.
db = pytest.mark.django_db


@pytest.fixture
def tenant(db):
    return tenant_make("qualify")[0]


def entry(tenant, **fields) -> dict:
    """An inbox entry as admission writes it (apps/intake/admission.py)."""
    return {
        "trace_id": str(uuid.uuid4()),
        "tenant_id": tenant.id,
        "received_at": time.time(),
        "email": f"ada-{uuid.uuid4().hex[:8]}@analytical.io",
        "name": "Ada",
        "phone": "+44 20 7946 0958",
        "company": "Analytical Engines",
        "source": "google_ads",
        "region": "gb",
        "payload": {"utm_source": "google"},
        "tier": "normal",
        **fields,
    }


def stored(entry_: dict) -> Lead:
    return Lead.objects.get(trace_id=entry_["trace_id"])


def test_every_lead_is_stored_normalized_scored_and_routed(tenant):
    good = entry(tenant, email="  Ada@Analytical.IO ", phone="020 7946 0958", tier="critical")
    weak = entry(tenant, email="test@gmail.com", phone="", company="", source="", region="")
    demoted = entry(tenant, demoted=True, campaign_id="spring")

    outcome = leads_qualify([good, weak, demoted])

    assert outcome.to_enrich == [good["trace_id"], demoted["trace_id"]]
    assert outcome.to_sync == [weak["trace_id"]]
    lead = stored(good)
    assert (lead.email, lead.phone, lead.tier, lead.tenant_id) == (
        "ada@analytical.io",
        "+442079460958",
        "critical",
        tenant.id,
    )
    assert (lead.status, lead.score, lead.is_qualified) == (LeadStatus.QUALIFIED, 100, True)
    assert lead.score_reasons == [
        "business email",
        "phone given",
        "company given",
        "paid acquisition",
        "core region",
        "flagged critical by the sender",
    ]
    assert lead.received_at == datetime.fromtimestamp(good["received_at"], tz=UTC)
    assert lead.qualified_at is not None and lead.updated_at == lead.qualified_at
    assert lead.payload == {"utm_source": "google"}
    assert (lead.duplicate_of, lead.enriched_at, lead.synced_at) == (None, None, None)
    assert not (lead.ai_degraded, lead.demoted, lead.enrichment_deferred, lead.sync_deferred)[0]
    assert stored(demoted).demoted is True and stored(good).demoted is False
    weak_lead = stored(weak)
    assert (weak_lead.score, weak_lead.is_qualified) == (0, False)
    assert weak_lead.score_reasons == ["throwaway address"]


def test_text_round_trips_whatever_characters_it_holds(tenant):
    awkward = "Tab\there, new\nline, CR\r, back\\slash, \\N, quote \" ' , {braces}, é 漢字 🚀"
    sent = entry(
        tenant,
        email='o\'neil+"x"\\y,z{1}@example.com',
        name=awkward,
        company=awkward,
        source=awkward,
        campaign_id="\\.",
        region="",
        phone="\\N",
        payload={"note": awkward, "nested": {"list": [1, 2.5, None, True, "\\"]}, "\t": ""},
    )
    leads_qualify([sent])
    lead = stored(sent)
    assert lead.email == sent["email"].lower()
    assert (lead.name, lead.company, lead.source) == (awkward, awkward, awkward)
    assert (lead.campaign_id, lead.phone, lead.region) == ("\\.", "\\N", "")
    assert lead.payload == sent["payload"]
    # The dedup query finds the awkward e-mail again.
    again = entry(tenant, email=sent["email"])
    leads_qualify([again])
    assert stored(again).duplicate_of == uuid.UUID(sent["trace_id"])


def test_redelivered_batch_inserts_nothing_and_returns_the_same_outcome(tenant):
    batch = [entry(tenant), entry(tenant, email="spam@gmail.com"), entry(tenant)]
    batch.append(entry(tenant, email=batch[0]["email"]))  # a duplicate inside the batch
    first = leads_qualify(batch)
    stored = {str(lead.trace_id): lead.updated_at for lead in Lead.objects.all()}

    again = leads_qualify(batch)

    assert (again.to_enrich, again.to_sync) == (first.to_enrich, first.to_sync)
    assert first.to_enrich == [batch[0]["trace_id"], batch[2]["trace_id"]]
    assert {str(lead.trace_id): lead.updated_at for lead in Lead.objects.all()} == stored


def test_redelivery_leaves_out_leads_that_moved_on(tenant):
    batch = [entry(tenant), entry(tenant), entry(tenant, email="noreply@gmail.com")]
    leads_qualify(batch)
    Lead.objects.filter(trace_id=batch[0]["trace_id"]).update(status=LeadStatus.ENRICHED)
    Lead.objects.filter(trace_id=batch[2]["trace_id"]).update(status=LeadStatus.SYNCED)

    again = leads_qualify(batch)

    assert (again.to_enrich, again.to_sync) == ([batch[1]["trace_id"]], [])


def test_a_trace_id_twice_in_a_batch_is_stored_and_sent_on_once(tenant):
    lead = entry(tenant)
    trace_id = lead["trace_id"]
    outcome = leads_qualify([lead, dict(lead), entry(tenant, trace_id=trace_id.upper())])
    assert outcome.to_enrich == [trace_id] and outcome.to_sync == []
    assert Lead.objects.count() == 1


def test_same_email_within_the_window_is_a_duplicate_of_the_first(tenant):
    now = time.time()
    window = SEMANTIC_DEDUP_WINDOW.total_seconds()
    first = entry(tenant, email="ada@analytical.io", received_at=now - window + 60)
    leads_qualify([first])
    same_batch = [
        entry(tenant, email="ADA@analytical.io ", received_at=now),
        entry(tenant, email="ada@analytical.io", received_at=now),
    ]
    outcome = leads_qualify(same_batch)

    assert outcome.to_enrich == [] and outcome.to_sync == []
    for lead in same_batch:
        lead_row = stored(lead)
        assert lead_row.status == LeadStatus.DUPLICATE
        assert lead_row.duplicate_of == uuid.UUID(first["trace_id"])
        assert (lead_row.score, lead_row.is_qualified, lead_row.qualified_at) == (None, None, None)
        assert lead_row.score_reasons == []


def test_dedup_window_and_tenants_bound_duplicates(tenant):
    other_tenant = tenant_make("qualify")[0]
    now = time.time()
    window = SEMANTIC_DEDUP_WINDOW.total_seconds()
    old = entry(tenant, email="ada@analytical.io", received_at=now - window - 60)
    leads_qualify([old])
    # The old lead is outside the window of the new ones; the second new one is inside the
    # first's; another tenant's lead of the same e-mail is its own.
    new = entry(tenant, email="ada@analytical.io", received_at=now)
    newer = entry(tenant, email="ada@analytical.io", received_at=now + 1)
    elsewhere = entry(other_tenant, email="ada@analytical.io", received_at=now)
    outcome = leads_qualify([new, newer, elsewhere])

    assert outcome.to_enrich == [new["trace_id"], elsewhere["trace_id"]]
    assert stored(new).status == LeadStatus.QUALIFIED
    assert stored(newer).duplicate_of == uuid.UUID(new["trace_id"])
    assert stored(elsewhere).status == LeadStatus.QUALIFIED


def test_a_stored_duplicate_is_never_the_original(tenant):
    now = time.time()
    original = entry(tenant, email="ada@analytical.io", received_at=now - 100)
    copy = entry(tenant, email="ada@analytical.io", received_at=now - 50)
    leads_qualify([original, copy])
    Lead.objects.filter(trace_id=original["trace_id"]).delete()

    later = entry(tenant, email="ada@analytical.io", received_at=now)
    leads_qualify([later])

    assert stored(later).status == LeadStatus.QUALIFIED


def test_the_original_is_the_first_received_of_the_earlier_leads(tenant):
    now = time.time()
    second = entry(tenant, email="ada@analytical.io", received_at=now - 50)
    first = entry(tenant, email="ada@analytical.io", received_at=now - 100)
    leads_qualify([second])
    leads_qualify([first])  # stored after `second`: its duplicate
    assert stored(first).duplicate_of == uuid.UUID(second["trace_id"])
    # Were both originals (an operator's fix, say), the one received first is the original.
    Lead.objects.filter(trace_id=first["trace_id"]).update(
        status=LeadStatus.QUALIFIED, duplicate_of=None
    )
    later = entry(tenant, email="ada@analytical.io", received_at=now)
    leads_qualify([later])
    assert stored(later).duplicate_of == uuid.UUID(first["trace_id"])


def test_copy_writes_every_column_of_the_model():
    rows.copy_statement.cache_clear()
    statement = rows.copy_statement()
    for field in Lead._meta.concrete_fields:
        assert f'"{field.column}"' in statement


def test_a_model_column_the_copy_misses_fails_loudly(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    rows.copy_statement.cache_clear()
    missed = rows.BATCH_COLUMNS[-1]
    monkeypatch.setattr(rows, "BATCH_COLUMNS", rows.BATCH_COLUMNS[:-1])
    try:
        with pytest.raises(ImproperlyConfigured, match=missed):
            rows.copy_statement()
    finally:
        rows.copy_statement.cache_clear()


def _lock_waiters(tenant_id: int) -> int:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid = %s AND objid = %s",
            [services._DEDUP_LOCK_NAMESPACE, tenant_id],
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_two_processes_never_both_take_the_same_email_as_new():
    """Two pool A processes with batches of one tenant holding the same e-mail: whichever
    goes second sees the first's lead, however their transactions interleave."""
    tenant = tenant_make("qualify")[0]
    batches = [[entry(tenant, email="ada@analytical.io")] for _ in range(2)]
    errors = []

    def worker(batch):
        try:
            leads_qualify(batch)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            connection.close()

    # Hold the tenant's lock, so both workers have done everything up to it and wait there.
    with connection.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, %s)", [services._DEDUP_LOCK_NAMESPACE, tenant.id]
        )
        threads = [threading.Thread(target=worker, args=(batch,)) for batch in batches]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while _lock_waiters(tenant.id) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _lock_waiters(tenant.id) == 2
        cursor.execute("COMMIT")
    for thread in threads:
        thread.join(timeout=10)
    assert not errors
    statuses = sorted(Lead.objects.filter(tenant=tenant).values_list("status", flat=True))
    assert statuses == [LeadStatus.DUPLICATE, LeadStatus.QUALIFIED]


def test_received_at_keeps_microseconds(tenant):
    stamp = 1795729084.245225
    sent = entry(tenant, received_at=stamp)
    leads_qualify([sent])
    assert stored(sent).received_at == datetime.fromtimestamp(stamp, tz=UTC)
    assert stored(sent).received_at - datetime.fromtimestamp(stamp, tz=UTC) == timedelta(0)


@pytest.mark.django_db(transaction=True)
def test_leads_of_a_deleted_tenant_are_dropped_and_the_rest_of_the_batch_is_stored():
    # Committed for real (transaction=True): the foreign key to the tenant is checked at commit,
    # and the batch shares one transaction.
    kept = tenant_make("kept")[0]
    gone = tenant_make("gone")[0]
    orphan = entry(gone)
    gone.delete()
    survivor = entry(kept)

    outcome = leads_qualify([orphan, survivor])

    assert outcome.to_enrich == [survivor["trace_id"]]
    assert stored(survivor).tenant_id == kept.id
    assert not Lead.objects.filter(trace_id=orphan["trace_id"]).exists()
