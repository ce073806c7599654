"""The retention job (apps/retention/retention.py) against the real PostgreSQL and Redis: final
leads past their tenant's retention lose their personal data and payload, in batches, with
their stage results; newer ones and unfinished ones keep everything; each run is audited."""

import threading
import time
import uuid
from datetime import timedelta

import psycopg
import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps import inbox
from apps.control.models import DeferredKind, DeferredWork, Mode
from apps.crm.models import CrmSync, DeadLetter, DeadLetterStage
from apps.enrichment.models import LeadEnrichment
from apps.intake import admission
from apps.leads.models import Lead, LeadStage, LeadStatus
from apps.leads.quarantine import failed_leads_replay
from apps.retention.metrics import retention_collector
from apps.retention.models import RetentionRun
from apps.retention.retention import FINAL_STATUSES, RetentionSchedule, retention_run
from apps.tenants.cache import tenant_for_key
from apps.tenants.services import tenant_create
from leadflow import redis_keys
from leadflow.metrics import tenant_label
from leadflow.redis_conn import get_inbox_redis
from tests.factories import lead_for_crm_make

NON_FINAL = (LeadStatus.QUALIFIED, LeadStatus.ENRICHED)


def _tenant(**fields):
    return tenant_create(f"retention-{uuid.uuid4().hex[:8]}", **fields)[0]


def _lead(tenant, status, ended_hours_ago: float, **fields) -> Lead:
    """A lead whose last change (its final status, for a final one) was that long ago, with its
    stage results and its trace key in Redis, as the pipeline leaves them."""
    lead = lead_for_crm_make(
        tenant,
        status=status,
        phone="+442079460958",
        payload={"utm": "spring", "note": "call Ada after 5"},
        failed_reason="phone: +442079460958 refused" if status == LeadStatus.FAILED else "",
        failed_entry='{"email": "x"}' if status == LeadStatus.FAILED else "",
        **fields,
    )
    LeadEnrichment.objects.create(lead=lead, provider="local", data={"domain": "example.com"})
    CrmSync.objects.create(
        lead=lead, adapter="local", response={"echo": lead.email}, synced_at=timezone.now()
    )
    DeadLetter.objects.create(
        tenant=tenant, lead=lead, stage=DeadLetterStage.CRM, error=f"refused {lead.email}"
    )
    DeferredWork.objects.create(
        kind=DeferredKind.ENRICHMENT, tenant=tenant, lead=lead, mode=Mode.NORMAL
    )
    ended = timezone.now() - timedelta(hours=ended_hours_ago)
    Lead.objects.filter(pk=lead.pk).update(updated_at=ended)
    get_inbox_redis().set(redis_keys.trace_key(str(lead.trace_id)), f"{tenant.id}|2|0|1|0", ex=3600)
    return lead


def _is_anonymized(lead: Lead) -> bool:
    row = Lead.objects.get(pk=lead.pk)
    cleared = (row.email, row.name, row.phone, row.company, row.payload) == ("", "", "", "", {})
    cleared = cleared and (row.failed_reason, row.failed_entry) == ("", "")
    enrichment = LeadEnrichment.objects.get(lead=lead).data
    response = CrmSync.objects.get(lead=lead).response
    error = DeadLetter.objects.get(lead=lead).error
    stages = (enrichment, response, error) == ({}, {}, "")
    if cleared != stages or cleared != (row.anonymized_at is not None):
        raise AssertionError(f"{lead.trace_id} half anonymized: {row.__dict__}")
    return cleared


def _trace_key_exists(lead: Lead) -> bool:
    return bool(get_inbox_redis().exists(redis_keys.trace_key(str(lead.trace_id))))


@pytest.mark.django_db
def test_final_leads_past_the_retention_are_anonymized_newer_and_unfinished_ones_kept():
    tenant = _tenant()  # the default: 48 h
    old = {status: _lead(tenant, status, ended_hours_ago=49) for status in FINAL_STATUSES}
    new = {status: _lead(tenant, status, ended_hours_ago=47) for status in FINAL_STATUSES}
    unfinished = [_lead(tenant, status, ended_hours_ago=24 * 30) for status in NON_FINAL]

    run = retention_run()

    for status, lead in old.items():
        assert _is_anonymized(lead), status
        assert not _trace_key_exists(lead), status
        row = Lead.objects.get(pk=lead.pk)
        # What accounting, reports and analytics read stays: the lead still counts.
        assert (row.status, row.tier, row.source, row.score) == (status, "normal", "landing", 80)
        assert row.updated_at < timezone.now() - timedelta(hours=48)  # still when it ended
        assert DeferredWork.objects.get(lead=lead).done_at is not None  # nothing left to redo
    for status, lead in new.items():
        assert not _is_anonymized(lead), status
        assert _trace_key_exists(lead), status
        assert DeferredWork.objects.get(lead=lead).done_at is None
    for lead in unfinished:
        assert not _is_anonymized(lead), lead.status
        assert Lead.objects.get(pk=lead.pk).payload == {"utm": "spring", "note": "call Ada after 5"}

    assert (run.leads, run.batches, run.complete) == (4, 1, True)
    assert (run.redis_keys, run.deferred_closed) == (4, 4)
    assert run.by_tenant == {str(tenant.id): 4}
    assert RetentionRun.objects.get() == run
    # A second run finds nothing left, and says so in its own audit row.
    again = retention_run()
    assert (again.leads, again.batches, again.complete) == (0, 0, True)
    assert RetentionRun.objects.count() == 2


@pytest.mark.django_db
def test_each_tenant_keeps_leads_for_its_own_retention():
    short, default = _tenant(retention_hours=1), _tenant()
    short_lead = _lead(short, LeadStatus.SYNCED, ended_hours_ago=2)
    short_recent = _lead(short, LeadStatus.SYNCED, ended_hours_ago=0.5)
    default_lead = _lead(default, LeadStatus.SYNCED, ended_hours_ago=2)

    run = retention_run()

    assert _is_anonymized(short_lead)
    assert not _is_anonymized(short_recent)
    assert not _is_anonymized(default_lead)
    assert run.by_tenant == {str(short.id): 1}


@pytest.mark.django_db
def test_the_job_works_in_batches_and_a_run_whose_time_is_up_leaves_the_rest_for_the_next():
    tenant = _tenant()
    leads = [_lead(tenant, LeadStatus.SYNCED, ended_hours_ago=50 + n / 60) for n in range(23)]

    partial = retention_run(batch_size=5, max_seconds=0)
    assert (partial.leads, partial.complete) == (0, False)

    run = retention_run(batch_size=5)
    assert (run.leads, run.batches, run.complete) == (23, 5, True)  # 5 + 5 + 5 + 5 + 3
    assert all(_is_anonymized(lead) for lead in leads)


@pytest.mark.django_db
def test_a_run_is_counted_in_the_metrics():
    tenant = _tenant()
    for _ in range(3):
        _lead(tenant, LeadStatus.DUPLICATE, ended_hours_ago=72)
    label = tenant_label(tenant.id)
    before = _samples()

    retention_run()

    after = _samples()
    assert (
        after[("leadflow_retention_anonymized_leads_total", label)]
        - before.get(("leadflow_retention_anonymized_leads_total", label), 0)
        == 3
    )
    runs = ("leadflow_retention_runs_total", "complete")
    assert after[runs] - before[runs] == 1
    assert after[("leadflow_retention_last_run_timestamp_seconds", "")] > time.time() - 60


def _samples() -> dict[tuple[str, str], float]:
    return {
        (sample.name, next(iter(sample.labels.values()), "")): sample.value
        for family in retention_collector.collect()
        for sample in family.samples
    }


@pytest.mark.django_db(transaction=True)
def test_a_lead_a_worker_holds_is_skipped_not_waited_for():
    """SKIP LOCKED: the job never waits on a pipeline transaction (and none waits long on it)."""
    tenant = _tenant()
    # Ended an hour ago, and the run's clock two days ahead: past the retention for this run
    # only (the live stack's control, if running, leaves these committed rows alone).
    held, free = (_lead(tenant, LeadStatus.SYNCED, ended_hours_ago=1) for _ in range(2))
    later = timezone.now() + timedelta(hours=48)
    settings_dict = connection.settings_dict
    conninfo = psycopg.conninfo.make_conninfo(
        dbname=settings_dict["NAME"],
        user=settings_dict["USER"],
        host=settings_dict["HOST"],
        port=settings_dict["PORT"] or 5432,
    )
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with psycopg.connect(conninfo) as conn, conn.transaction():
            conn.execute("SELECT 1 FROM leads_lead WHERE trace_id = %s FOR UPDATE", [held.pk])
            locked.set()
            release.wait(30)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        run = retention_run(now=later)
        assert time.monotonic() - started < 5
    finally:
        release.set()
        worker.join()

    assert (run.leads, _is_anonymized(free), _is_anonymized(held)) == (1, True, False)
    assert retention_run(now=later).leads == 1  # the next run takes it


@pytest.mark.django_db
def test_the_schedule_runs_at_the_interval_and_catches_up_at_once_only_in_normal_mode(
    settings,
):
    settings.RETENTION_INTERVAL_SECONDS = 300
    settings.RETENTION_RUN_MAX_SECONDS = 0  # every run's time is up: a backlog remains
    _lead(_tenant(), LeadStatus.SYNCED, ended_hours_ago=49)
    schedule = RetentionSchedule()
    assert schedule.due()
    schedule.run(normal_mode=False)
    assert not schedule.due()  # under overload: the next run waits for the interval
    schedule = RetentionSchedule()
    schedule.run(normal_mode=True)
    assert schedule.due()  # in NORMAL mode: on with the backlog at the next pass
    settings.RETENTION_RUN_MAX_SECONDS = 2
    schedule.run(normal_mode=True)
    assert not schedule.due()  # caught up: the interval


@pytest.mark.django_db(transaction=True)
def test_a_leads_redis_keys_never_outlive_its_tenants_retention():
    """Admission gives a lead's dedup and trace keys a TTL no longer than the retention: its
    dedup key cannot be named from the row later (a hash of the request) to be deleted."""
    ttls = {}
    for hours in (1, 48):
        tenant, key = tenant_create(f"retention-{uuid.uuid4().hex[:8]}", retention_hours=hours)
        digest = admission.dedup_digest_for_body({"email": f"{uuid.uuid4().hex}@example.com"})
        candidate = admission.Candidate(digest, "normal", {"email": "ada@example.com"})
        [admitted] = admission.admit(tenant_for_key(key), "10.9.9.9", [candidate]).admissions
        client = get_inbox_redis()
        ttls[hours] = (
            client.ttl(redis_keys.dedup_key(tenant.id, digest)),
            client.ttl(redis_keys.trace_key(admitted.trace_id)),
        )
        # Out of the inbox again: no pool is to store a lead of a tenant the test drops.
        batch = inbox.claim_batch("normal", [tenant.id], 10)
        if batch is not None:
            inbox.release_batch(batch.batch_id)
    assert all(0 < ttl <= 3600 for ttl in ttls[1]), ttls
    assert all(3600 < ttl <= settings.DEDUP_TTL_SECONDS for ttl in ttls[48]), ttls


@pytest.mark.django_db
def test_an_anonymized_failed_lead_is_not_replayed():
    tenant = _tenant()
    leads = [_lead(tenant, LeadStatus.FAILED, ended_hours_ago=hours) for hours in (49, 1)]
    for lead in leads:
        Lead.objects.filter(pk=lead.pk).update(failed_stage=LeadStage.CRM)
    retention_run()

    # The recent one goes back to pool C; the anonymized one stays as it is.
    assert failed_leads_replay([str(lead.pk) for lead in leads]) == 1
    assert Lead.objects.get(pk=leads[0].pk).status == LeadStatus.FAILED
