"""Pool C: CRM sync and reports (thread pool).

A batch's tenants are delivered each on its own (apps/crm/services.py): a tenant's transient
failure re-enqueues only that tenant's leads, on the CRM's retry schedule; the others are done
at once. Celery enforces no time limit on a thread pool (celery/celery#9203), so the task keeps
its own deadline and re-enqueues what did not fit. PostgreSQL or Redis down: the whole message
is retried, for as long as the outage lasts; no lead is dead-lettered or quarantined for it.
"""

from datetime import datetime

from django.conf import settings

from apps.crm.services import (
    SyncOutcome,
    crm_retry_countdown,
    leads_sync,
    sync_outcome_defer_if_paused,
)
from apps.reports.services import report_build
from leadflow.celery import app
from leadflow.outbound import DEPENDENCY_DOWN_ERRORS, Deadline
from leadflow.queues import queue_name

WAIT_COUNTDOWN_MAX_SECONDS = 60.0


@app.task(
    name="pool_c.sync_leads",
    autoretry_for=DEPENDENCY_DOWN_ERRORS,
    max_retries=None,
    retry_backoff=True,
    retry_backoff_max=settings.DEPENDENCY_RETRY_MAX_SECONDS,
    retry_jitter=True,
)
def sync_leads(trace_ids: list[str], tier: str, resend: bool = False, attempt: int = 0) -> None:
    """Deliver the batch to its tenants' CRMs; leads already synced are skipped unless resend.
    `attempt` counts the transient failures these leads met before (a retry's message)."""
    outcome = SyncOutcome()
    try:
        leads_sync(
            trace_ids,
            resend=resend,
            attempt=attempt,
            deadline=Deadline(settings.CRM_TASK_DEADLINE_SECONDS),
            outcome=outcome,
        )
    finally:
        # Also when a dependency failed midway: the retries decided so far keep their schedule.
        _outcome_send(outcome, tier, resend, attempt)


def _outcome_send(outcome: SyncOutcome, tier: str, resend: bool, attempt: int) -> None:
    if not (outcome.retry or outcome.later or outcome.waiting):
        return
    if sync_outcome_defer_if_paused(outcome, tier):
        return
    queue = queue_name("c", tier)
    for retry in outcome.retry:
        sync_leads.apply_async(
            args=[retry.trace_ids, tier],
            kwargs={"resend": resend, "attempt": attempt + 1},
            queue=queue,
            countdown=crm_retry_countdown(attempt + 1),
        )
    kwargs = {"resend": resend, "attempt": attempt}
    if outcome.later:
        sync_leads.apply_async(args=[outcome.later, tier], kwargs=kwargs, queue=queue)
    for trace_ids, wait in outcome.waiting:
        # A message waiting for its ETA is held by a worker; a long wait is looked at again
        # after a minute instead (a tenant's pace may be raised, a lease may end sooner).
        countdown = min(wait, WAIT_COUNTDOWN_MAX_SECONDS)
        sync_leads.apply_async(
            args=[trace_ids, tier], kwargs=kwargs, queue=queue, countdown=countdown
        )


@app.task(name="pool_c.build_report")
def build_report(tenant_id: int, kind: str, period_start: str) -> None:
    """LOW: one tenant's report or analytics for one period (idempotent: rebuilt in place)."""
    report_build(tenant_id, kind, datetime.fromisoformat(period_start))
