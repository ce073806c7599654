"""The retention job: a lead that reached a final status (synced, failed, duplicate,
dead-lettered) longer ago than its tenant's retention (Tenant.retention_hours, 48 by default)
loses its personal data and payload; the row stays, anonymized (README "Retention" says why).

Run by the control process's database thread (apps/control/database_work.py) every
LEADFLOW_RETENTION_INTERVAL_SECONDS, on the leader only. Each batch is one SQL statement (so one
short transaction, one round trip) over at most LEADFLOW_RETENTION_BATCH_SIZE leads, taken with
FOR UPDATE SKIP LOCKED (a lead a worker holds is left for the next run, nobody waits on the
job), oldest first through a partial index (lead_retention_idx);
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
from django.db import connection
from django.utils import timezone

from apps.leads.models import LeadStatus
from apps.retention.metrics import retention_counted
from apps.retention.models import RetentionRun
from apps.tenants.models import Tenant
from leadflow import redis_keys
from leadflow.redis_conn import get_inbox_redis

# A lead in one of these has nothing left to do (a failed or dead-lettered one can be replayed,
# within the retention; after it, there is nothing left to replay).
FINAL_STATUSES = (
    LeadStatus.SYNCED,
    LeadStatus.FAILED,
    LeadStatus.DUPLICATE,
    LeadStatus.DEAD_LETTERED,
)
# One batch, one statement (so one short transaction, one round trip): take up to `limit` final
# leads of the tenants keeping `hours`, oldest first, skipping any a worker holds; clear their
# personal fields and their stage results' copies of them. Kept: tenant, tier, status, score and
# its reasons, source, campaign, region, flags and timestamps (updated_at still says when the
# lead ended): what accounting, reports and analytics read, none of it about the person. A
# failed lead's reason may quote the value that failed, and its entry is the lead as sent.
# Their open deferred work (a degraded enrichment to redo, a CRM update) has nothing left to
# redo it with: closed, and counted in the run's audit row.
BATCH_SQL = (
    """
WITH doomed AS (
    SELECT lead.trace_id
    FROM leads_lead lead JOIN tenants_tenant tenant ON tenant.id = lead.tenant_id
    WHERE tenant.retention_hours = %(hours)s
      AND lead.status IN ({final})
      AND lead.anonymized_at IS NULL
      AND lead.updated_at < %(cutoff)s
    ORDER BY lead.updated_at
    LIMIT %(limit)s
    FOR UPDATE OF lead SKIP LOCKED
), anonymized AS (
    UPDATE leads_lead SET email = '', name = '', phone = '', company = '', payload = '{}',
        failed_reason = '', failed_entry = '', anonymized_at = %(now)s
    FROM doomed WHERE leads_lead.trace_id = doomed.trace_id
    RETURNING leads_lead.trace_id, leads_lead.tenant_id
), enrichments AS (
    UPDATE enrichment_leadenrichment SET data = '{}'
    WHERE lead_id IN (SELECT trace_id FROM doomed)
), syncs AS (
    UPDATE crm_crmsync SET response = '{}' WHERE lead_id IN (SELECT trace_id FROM doomed)
), dead_letters AS (
    UPDATE crm_deadletter SET error = '' WHERE lead_id IN (SELECT trace_id FROM doomed)
), deferred AS (
    UPDATE control_deferredwork SET done_at = %(now)s
    WHERE lead_id IN (SELECT trace_id FROM doomed) AND done_at IS NULL
    RETURNING 1
)
SELECT trace_id, tenant_id, (SELECT count(*) FROM deferred) FROM anonymized
"""
    # Constants, as the partial index's predicate says them, so the planner can use it.
).replace("{final}", ", ".join(f"'{status.value}'" for status in FINAL_STATUSES))


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
    """One statement (BATCH_SQL); returns how many leads it took."""
    params = {
        "hours": hours,
        "cutoff": cutoff,
        "limit": limit,
        "now": timezone.now(),
    }
    with connection.cursor() as cursor:
        cursor.execute(BATCH_SQL, params)
        rows = cursor.fetchall()
    if not rows:
        return 0
    # After the commit: a Redis failure leaves the keys to their TTL, never the data in place.
    trace_ids = [str(trace_id) for trace_id, _, _ in rows]
    deleted = get_inbox_redis().delete(*(redis_keys.trace_key(t) for t in trace_ids))
    totals.leads += len(rows)
    totals.batches += 1
    totals.redis_keys += deleted
    totals.deferred_closed += rows[0][2]
    for _, tenant_id, _ in rows:
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
