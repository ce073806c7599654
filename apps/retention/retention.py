"""The retention job: a lead that reached a final status (synced, failed, duplicate,
dead-lettered) longer ago than its tenant's retention (Tenant.retention_hours, 48 by default)
loses its personal data and payload; the row stays, anonymized (README "Retention" says why).

Run by the control process's database thread (apps/control/database_work.py) every
LEADFLOW_RETENTION_INTERVAL_SECONDS, on the leader only. Each batch is one short transaction of
at most LEADFLOW_RETENTION_BATCH_SIZE leads, taken with FOR UPDATE SKIP LOCKED (a lead a worker
holds is left for the next run, nobody waits on the job), oldest first through a partial index;
a run stops after LEADFLOW_RETENTION_RUN_MAX_SECONDS and the next one goes on where it stopped.
Every run leaves an audit row (RetentionRun) and counts in the control's metrics.

Redis: a lead's trace key (its status while queued) is deleted with its data; its dedup key
cannot be named from the row (a hash of the request), so admission gives it a TTL no longer
than the tenant's retention (apps/intake/admission.py), and the CRM's per-lead keys live an
hour at most, the shortest retention allowed.
"""

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.control.models import DeferredWork
from apps.crm.models import CrmSync, DeadLetter
from apps.enrichment.models import LeadEnrichment
from apps.intake import inbox
from apps.leads.models import Lead, LeadStatus
from apps.retention.metrics import retention_counted
from apps.retention.models import RetentionRun
from apps.tenants.models import Tenant
from leadflow.redis_conn import get_redis

# A lead in one of these has nothing left to do (a failed or dead-lettered one can be replayed,
# within the retention; after it, there is nothing left to replay).
FINAL_STATUSES = (
    LeadStatus.SYNCED,
    LeadStatus.FAILED,
    LeadStatus.DUPLICATE,
    LeadStatus.DEAD_LETTERED,
)
# What anonymization leaves in a lead's personal fields. Kept: tenant, tier, status, score and
# its reasons, source, campaign, region, flags and timestamps: what accounting, reports and
# analytics read, none of it about the person.
ANONYMIZED = {
    "email": "",
    "name": "",
    "phone": "",
    "company": "",
    "payload": {},
    "failed_reason": "",  # may quote the value that failed
    "failed_entry": "",  # the inbox entry as it came: everything above
}


@dataclass
class RunTotals:
    leads: int = 0
    batches: int = 0
    redis_keys: int = 0
    deferred_closed: int = 0
    by_tenant: dict[int, int] = field(default_factory=dict)


def retention_run(
    now: datetime | None = None, batch_size: int | None = None, max_seconds: float | None = None
) -> RetentionRun:
    """Anonymize every final lead past its tenant's retention, batch by batch, until none is
    left or the run's time is up; record the run and count it."""
    started_at = now or timezone.now()
    batch_size = batch_size or settings.RETENTION_BATCH_SIZE
    max_seconds = settings.RETENTION_RUN_MAX_SECONDS if max_seconds is None else max_seconds
    deadline = time.monotonic() + max_seconds
    totals = RunTotals()
    complete = True
    # One pass per distinct retention (a handful), so the cutoff is a constant the index serves.
    for hours in sorted(set(Tenant.objects.values_list("retention_hours", flat=True))):
        cutoff = started_at - timedelta(hours=hours)
        while True:
            if time.monotonic() >= deadline:
                complete = False
                break
            taken = _batch_anonymize(hours, cutoff, batch_size, totals)
            if taken < batch_size:
                break
        if not complete:
            break
    finished_at = timezone.now()
    run = RetentionRun.objects.create(
        started_at=started_at,
        finished_at=finished_at,
        leads=totals.leads,
        batches=totals.batches,
        redis_keys=totals.redis_keys,
        deferred_closed=totals.deferred_closed,
        by_tenant={str(tenant_id): n for tenant_id, n in sorted(totals.by_tenant.items())},
        complete=complete,
    )
    retention_counted(totals.by_tenant, complete, finished_at.timestamp())
    return run


def _batch_anonymize(hours: int, cutoff: datetime, limit: int, totals: RunTotals) -> int:
    """One transaction: up to `limit` leads of the tenants keeping `hours`, final before
    `cutoff`, anonymized with their stage results. Returns how many leads it took."""
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            Lead.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(
                tenant__retention_hours=hours,
                status__in=FINAL_STATUSES,
                anonymized_at__isnull=True,
                updated_at__lt=cutoff,
            )
            .order_by("updated_at")
            .values_list("trace_id", "tenant_id")[:limit]
        )
        if not rows:
            return 0
        trace_ids = [trace_id for trace_id, _ in rows]
        # QuerySet.update leaves updated_at (auto_now) alone: it still says when the lead ended.
        Lead.objects.filter(trace_id__in=trace_ids).update(**ANONYMIZED, anonymized_at=now)
        LeadEnrichment.objects.filter(lead_id__in=trace_ids).update(data={})
        CrmSync.objects.filter(lead_id__in=trace_ids).update(response={})
        DeadLetter.objects.filter(lead_id__in=trace_ids).update(error="")
        # A degraded enrichment waiting to be redone, or a CRM update: nothing left to redo it
        # with. Closed, and counted in the run's audit row.
        closed = DeferredWork.objects.filter(lead_id__in=trace_ids, done_at__isnull=True).update(
            done_at=now
        )
    # After the commit: a Redis failure leaves the keys to their TTL, never the data in place.
    deleted = get_redis().delete(*(inbox.trace_key(str(trace_id)) for trace_id in trace_ids))
    totals.leads += len(rows)
    totals.batches += 1
    totals.redis_keys += deleted
    totals.deferred_closed += closed
    for _, tenant_id in rows:
        totals.by_tenant[tenant_id] = totals.by_tenant.get(tenant_id, 0) + 1
    return len(rows)


class RetentionSchedule:
    """When the control's database thread runs the job: every interval; at once again after a
    run whose time was up, in NORMAL mode (under overload, PostgreSQL's writes are the leads')."""

    def __init__(self) -> None:
        self._next_at = 0.0  # monotonic; the first pass after a term starts runs it

    def due(self) -> bool:
        return time.monotonic() >= self._next_at

    def run(self, normal_mode: bool) -> RetentionRun:
        run = retention_run()
        catch_up = not run.complete and normal_mode
        self._next_at = time.monotonic() + (
            0.0 if catch_up else settings.RETENTION_INTERVAL_SECONDS
        )
        return run
