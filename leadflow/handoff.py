"""Work handed from stage to stage, by task *name*: the one place that publishes pipeline tasks.

Services, the pools and the control process send work through these functions instead of
importing task modules, so dependencies point one way (tasks import services, never the
reverse).

A paused tier's queues receive nothing (README "Overload"): leads handed to enrichment or to the
CRM while the controller pauses their tier are written to the deferred ledger instead (reason
"paused"), and the backfill sends them on once the tier resumes. Being here, that holds for
every sender at once: pool A's fan-out, pool B's hand-off of a batch that was running when the
pause began, pool C's retries and re-enqueues, replays by an operator. The tier's state is
each process's cached copy of the controller's (at most ~1.5 s old).

Import-light: the Celery app and the queue names; the ledger and the controller's state only
when a hand-off needs them.
"""

from datetime import datetime

from leadflow.celery import app
from leadflow.queues import LEADS_PER_MESSAGE_MAX, queue_name

QUALIFY_TASK = "pool_a.qualify_leads"
ENRICH_TASK = "pool_b.enrich_leads"
ENRICH_DEFERRED_TASK = "pool_b.enrich_deferred_leads"
SYNC_TASK = "pool_c.sync_leads"
REPORT_TASK = "pool_c.build_report"
AI_PROBE_TASK = "pool_b.probe_ai_provider"


def send_to_qualify(entries: list[str], tier: str, batch_id: str | None = None) -> None:
    """Inbox entries (JSON text) to pool A; batch_id names the dispatcher's in-flight copy."""
    app.send_task(QUALIFY_TASK, args=[entries, tier, batch_id], queue=queue_name("a", tier))


def send_to_enrich(trace_ids: list[str], tier: str, *, deferred: bool = False) -> None:
    """Stored, qualified leads to pool B, a bounded batch a message. deferred: enrichments shed
    or degraded earlier, redone from the ledger (pool B then delivers those leads again)."""
    if not trace_ids:
        return
    if _paused(tier):
        # Fresh leads wait for their CRM delivery too, so that no other path (the stalled-lead
        # sweeper) sends them on without the enrichment; the enrichment backfill delivers them.
        _hold(trace_ids, ("enrichment",) if deferred else ("enrichment", "crm_sync"))
        return
    task = ENRICH_DEFERRED_TASK if deferred else ENRICH_TASK
    for batch in _batches(trace_ids):
        app.send_task(task, args=[batch, tier], queue=queue_name("b", tier))


def send_to_sync(
    trace_ids: list[str],
    tier: str,
    resend: bool = False,
    *,
    attempt: int = 0,
    countdown: float | None = None,
) -> None:
    """CRM-ready leads to pool C, a bounded batch a message; resend delivers synced ones again
    (a backfilled enrichment). A retry passes its `attempt` (pool C's retry schedule) and the
    `countdown` before it runs."""
    if not trace_ids:
        return
    if _paused(tier):
        # A second delivery carries an enrichment: it waits as that enrichment, whose backfill
        # delivers again; a first delivery waits as itself.
        _hold(trace_ids, ("enrichment",) if resend else ("crm_sync",))
        return
    kwargs: dict = {"resend": True} if resend else {}
    if attempt:
        kwargs["attempt"] = attempt
    for batch in _batches(trace_ids):
        app.send_task(
            SYNC_TASK,
            args=[batch, tier],
            kwargs=kwargs,
            queue=queue_name("c", tier),
            countdown=countdown,
        )


def send_report(tenant_id: int, kind: str, period_start: datetime) -> None:
    """A tenant's report or analytics for one period, to pool C's LOW queue (the control
    process holds it in the ledger instead while LOW is paused)."""
    app.send_task(
        REPORT_TASK, args=[tenant_id, kind, period_start.isoformat()], queue=queue_name("c", "low")
    )


def send_ai_probe() -> None:
    """Ask pool B to try the AI provider through its breaker, open or failing, so its return is
    seen (apps/control/backfill.py). On b.normal: a few calls, never held in a paused queue."""
    app.send_task(AI_PROBE_TASK, queue=queue_name("b", "normal"))


def _paused(tier: str) -> bool:
    from apps.control.state import shedding_current

    return tier in shedding_current().paused_tiers


def _hold(trace_ids: list[str], kinds: tuple[str, ...]) -> None:
    """Write the leads to the deferred ledger, reason paused, for each kind of work."""
    from django.db import transaction

    from apps.control.ledger import leads_defer
    from apps.control.models import DeferredReason
    from apps.control.state import shedding_current

    mode = shedding_current().mode
    with transaction.atomic():
        for kind in kinds:
            leads_defer(kind, trace_ids, mode, DeferredReason.PAUSED)


def _batches(trace_ids: list[str]):
    for start in range(0, len(trace_ids), LEADS_PER_MESSAGE_MAX):
        yield trace_ids[start : start + LEADS_PER_MESSAGE_MAX]
