"""The receipt's rows, as the control process writes them (apps/usage/receipt.py): the
intake's counts from admission's own script, the pipeline's from the services that record
them (ledger, quarantine, dead letters, CRM deliveries), percentiles by percentile_cont; an
upsert that a repeat leaves as it is; a closed hour kept in PostgreSQL, gone from Redis. And
the operators' page of every tenant's last 24 hours."""

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.utils import timezone

from apps import inbox
from apps.control.ledger import leads_defer, leads_deferral_close
from apps.control.models import DeferredKind, DeferredReason, Mode
from apps.crm.dead_letters import leads_dead_letter
from apps.crm.models import CrmSync, DeadLetterStage
from apps.intake import admission
from apps.leads.models import LeadStage, LeadStatus
from apps.leads.quarantine import leads_quarantine
from apps.tenants.cache import tenant_for_key
from apps.tenants.models import Tenant
from apps.usage.models import HourlyReceipt
from apps.usage.receipt import FINAL_AFTER, HOUR, hour_floor, receipts_flush, tenant_receipt
from leadflow import redis_keys
from leadflow.redis_conn import get_redis
from tests.factories import lead_make

pytestmark = pytest.mark.django_db(transaction=True)


def _admit(key: str, tenant_id: int, priorities: list[str]) -> list[admission.Admission]:
    """Leads through admission's script, then out of the inbox again (no pool stores them)."""
    candidates = [
        admission.Candidate(
            admission.dedup_digest_for_body({"n": uuid.uuid4().hex}),
            priority,
            {"email": f"{uuid.uuid4().hex[:8]}@example.com"},
        )
        for priority in priorities
    ]
    answers = admission.admit(tenant_for_key(key), "10.8.8.8", candidates).admissions
    for tier in ("critical", "normal"):
        batch = inbox.claim_batch(tier, [tenant_id], 100)
        if batch is not None:
            inbox.release_batch(batch.batch_id)
    return answers


def _row(tenant, hour) -> HourlyReceipt:
    return HourlyReceipt.objects.get(tenant=tenant, hour=hour)


def test_the_flush_writes_each_hour_once_with_every_count(make_tenant):
    tenant, key = make_tenant("flush", hourly_budget=3, critical_capacity=0)
    other, _ = make_tenant("flush-other")
    now = timezone.now()
    this_hour = hour_floor(now)
    answers = _admit(key, tenant.id, ["critical", "normal", "normal", "normal", "normal"])
    assert [a.accepted for a in answers] == [True, True, True, False, False]

    # The hour before: CRM deliveries 1..100 s after receipt, and the pipeline's records.
    last_hour = this_hour - HOUR
    for seconds in range(1, 101):
        synced_at = last_hour + timedelta(minutes=30)
        lead = lead_make(
            tenant,
            status=LeadStatus.SYNCED,
            received_at=synced_at - timedelta(seconds=seconds),
            synced_at=synced_at,
        )
        CrmSync.objects.create(lead=lead, adapter="webhook", synced_at=synced_at)
    lead_make(other, status=LeadStatus.SYNCED)  # another tenant's, no delivery: not counted
    sampled = [str(lead_make(tenant).trace_id) for _ in range(3)]
    leads_defer(DeferredKind.CRM_SYNC, sampled, Mode.SEVERE)
    shed = [str(lead_make(tenant).trace_id) for _ in range(2)]
    leads_defer(DeferredKind.ENRICHMENT, shed, Mode.THIN, DeferredReason.SHED)
    leads_deferral_close(DeferredKind.ENRICHMENT, shed[:1])
    failing = [str(lead_make(tenant, status=LeadStatus.ENRICHED).trace_id) for _ in range(2)]
    assert leads_quarantine(failing[:1], LeadStage.ENRICHMENT, "bad payload", "ValueError") == 1
    leads_dead_letter(failing[1:], DeadLetterStage.CRM, "CRM answered 500", attempts=3)

    written = receipts_flush(now)

    assert written >= 2
    current, previous = _row(tenant, this_hour), _row(tenant, last_hour)
    assert (current.accepted, current.demoted, current.refused_hourly_budget) == (3, 1, 2)
    assert (current.sampled, current.deferred, current.backfilled) == (3, 2, 1)
    assert (current.quarantined, current.dead_lettered) == (1, 1)
    assert (previous.synced, previous.accepted) == (100, 0)
    assert previous.synced_p50_seconds == pytest.approx(50.5)
    assert previous.synced_p99_seconds == pytest.approx(99.01)
    assert not HourlyReceipt.objects.filter(tenant=other).exists()
    # The API's reading of the same hours is the rows'.
    [api_previous, api_current] = tenant_receipt(tenant.id, last_hour, now, now=now)
    assert (api_current.accepted, api_current.sampled) == (3, 3)
    assert api_previous.synced_p99_seconds == pytest.approx(99.01)

    # A repeat (or a second control process) writes the same rows again, not more.
    before = list(HourlyReceipt.objects.filter(tenant=tenant).order_by("hour").values())
    receipts_flush(now)
    after = list(HourlyReceipt.objects.filter(tenant=tenant).order_by("hour").values())
    strip = [{k: v for k, v in row.items() if k != "updated_at"} for row in before]
    assert strip == [{k: v for k, v in row.items() if k != "updated_at"} for row in after]


def test_an_hour_written_after_its_end_is_final_and_not_counted_again(make_tenant):
    tenant, _ = make_tenant("flush-final")
    this_hour = hour_floor(timezone.now())
    lead = lead_make(tenant, status=LeadStatus.SYNCED, received_at=this_hour)
    CrmSync.objects.create(lead=lead, adapter="webhook", synced_at=this_hour + timedelta(seconds=2))
    final: set = set()
    later = this_hour + HOUR + FINAL_AFTER  # as a flush then would see it

    receipts_flush(later, final)

    assert this_hour in final and this_hour + HOUR not in final
    assert _row(tenant, this_hour).synced == 1
    # Something dated in a final hour (it cannot happen: this is the test's doing) is not
    # counted by the control process that holds the hour final; a new leader recounts once.
    late = lead_make(tenant, status=LeadStatus.SYNCED, received_at=this_hour)
    CrmSync.objects.create(lead=late, adapter="webhook", synced_at=this_hour + timedelta(seconds=3))
    receipts_flush(later, final)
    assert _row(tenant, this_hour).synced == 1
    receipts_flush(later, set())
    assert _row(tenant, this_hour).synced == 2


def test_deliveries_are_counted_on_their_own_cadence_and_when_their_hour_ends(make_tenant):
    tenant, _ = make_tenant("flush-deliveries")
    now = timezone.now()
    this_hour = hour_floor(now)

    def delivered() -> None:
        lead = lead_make(tenant, status=LeadStatus.SYNCED, received_at=this_hour)
        CrmSync.objects.create(lead=lead, adapter="webhook", synced_at=this_hour)

    delivered()
    receipts_flush(now, deliveries=False)
    assert not HourlyReceipt.objects.filter(tenant=tenant).exists()
    receipts_flush(now)
    assert _row(tenant, this_hour).synced == 1
    delivered()
    receipts_flush(now, deliveries=False)
    assert _row(tenant, this_hour).synced == 1  # kept as last counted
    receipts_flush(this_hour + HOUR + FINAL_AFTER, deliveries=False)  # the hour has ended
    assert _row(tenant, this_hour).synced == 2


def test_a_closed_hour_is_written_then_forgotten_by_redis_and_kept(make_tenant):
    tenant, _ = make_tenant("flush-closed")
    now = timezone.now()
    old_hour = hour_floor(now) - 5 * HOUR
    # As admit.lua leaves it when the control process was away for those hours.
    epoch_hour = int(old_hour.timestamp()) // 3600
    receipt = redis_keys.receipt_key(tenant.id)
    get_redis().hset(receipt, mapping={f"{epoch_hour}|accepted": 7, f"{epoch_hour}|ip_rate": 2})
    get_redis().hset(receipt, mapping={"garbage": 1, "x|accepted": 1, f"{epoch_hour}|other": 1})

    receipts_flush(now)

    row = _row(tenant, old_hour)
    assert (row.accepted, row.refused_ip_rate) == (7, 2)
    # The hour's fields are gone; what admission never writes is left to the key's expiry.
    assert set(get_redis().hgetall(receipt)) == {
        b"garbage",
        b"x|accepted",
        f"{epoch_hour}|other".encode(),
    }
    hours = tenant_receipt(tenant.id, old_hour, now, now=now)
    assert (hours[0].hour, hours[0].accepted, hours[0].refused_ip_rate) == (old_hour, 7, 2)
    receipts_flush(now)  # nothing left in Redis for it: the row stays as written
    assert _row(tenant, old_hour).accepted == 7


def test_counts_left_in_the_receipt_hash_of_the_layout_before_shards_are_written(make_tenant):
    """An upgrade: the hash admission used before (lf:receipt:<tenant>) still counts an open
    hour; the flush adds it to the tenant's hash, writes it, and the old key is gone."""
    tenant, key = make_tenant("flush-legacy", hourly_budget=10)
    now = timezone.now()
    this_hour = hour_floor(now)
    epoch_hour = int(this_hour.timestamp()) // 3600
    legacy = f"lf:receipt:{tenant.id}"
    get_redis().hset(legacy, mapping={f"{epoch_hour}|accepted": 5, f"{epoch_hour}|ip_rate": 1})
    _admit(key, tenant.id, ["normal"])

    receipts_flush(now)

    row = _row(tenant, this_hour)
    assert (row.accepted, row.refused_ip_rate) == (6, 1)
    assert not get_redis().exists(legacy)
    receipts_flush(now)  # counted once
    assert _row(tenant, this_hour).accepted == 6


def test_the_admin_page_shows_every_tenants_last_day(admin_client, make_tenant):
    tenant, key = make_tenant("receipt-admin", hourly_budget=1)
    quiet, _ = make_tenant("receipt-quiet")
    _admit(key, tenant.id, ["normal", "normal"])

    page = admin_client.get("/admin/usage/hourlyreceipt/")

    assert page.status_code == 200
    html = page.content.decode()
    assert tenant.name in html and quiet.name in html
    assert html.count("<svg") >= 2
    assert "accepted 1</title>" in html and "refused 1</title>" in html


def test_a_tenant_deleted_during_the_flush_leaves_the_others_written(make_tenant):
    """The flush reads the tenants, then writes their rows: a tenant deleted in between (its
    rows' foreign key fails at commit) must not fail the flush, and with it the control process
    for every tenant; the others' rows are written."""
    kept, kept_key = make_tenant("flush-kept")
    doomed, doomed_key = make_tenant("flush-doomed")
    _admit(kept_key, kept.id, ["normal"])
    _admit(doomed_key, doomed.id, ["normal"])
    deleting, release = threading.Event(), threading.Event()

    def delete_and_hold() -> None:
        try:
            with transaction.atomic():
                Tenant.objects.filter(id=doomed.id).delete()  # its row locked until commit
                deleting.set()
                release.wait(timeout=30)
        finally:
            connections.close_all()

    deleter = threading.Thread(target=delete_and_hold)
    deleter.start()
    try:
        assert deleting.wait(timeout=30)
        # The flush sees the doomed tenant (not deleted yet) and its foreign-key check waits on
        # the deleting transaction's lock; that commits a second later.
        threading.Timer(1.0, release.set).start()
        receipts_flush()
    finally:
        release.set()
        deleter.join(timeout=30)

    assert not Tenant.objects.filter(id=doomed.id).exists()
    assert _row(kept, hour_floor(timezone.now())).accepted == 1
    assert not HourlyReceipt.objects.filter(tenant_id=doomed.id).exists()
