"""Pool C: CRM sync (thread pool). Transient failures retry with backoff; the last dead-letters."""

from datetime import datetime

from celery import Task
from django.conf import settings

from apps.crm.adapters import CrmUnavailable
from apps.crm.services import leads_dead_letter, leads_sync
from apps.reports.services import report_build
from leadflow.celery import app


class DeadLetterOnFailure(Task):
    """Whatever makes the task give up (retries exhausted, a bug), its leads become dead letters."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        trace_ids = kwargs.get("trace_ids", args[0] if args else [])
        leads_dead_letter(
            trace_ids,
            stage="crm",
            error=f"{type(exc).__name__}: {exc}",
            attempts=self.request.retries + 1,
        )


@app.task(
    name="pool_c.sync_leads",
    base=DeadLetterOnFailure,
    autoretry_for=(CrmUnavailable,),
    max_retries=settings.CRM_MAX_RETRIES,
    retry_backoff=True,  # 1 s, 2 s, 4 s, … between attempts
    retry_backoff_max=settings.CRM_RETRY_BACKOFF_MAX_SECONDS,
    retry_jitter=True,  # spread retries so a CRM that comes back is not hit all at once
)
def sync_leads(trace_ids: list[str], tier: str, resend: bool = False) -> None:
    """Deliver the batch to the tenant's CRM; leads already synced are skipped unless resend."""
    leads_sync(trace_ids, resend=resend)


@app.task(name="pool_c.build_report")
def build_report(tenant_id: int, kind: str, period_start: str) -> None:
    """LOW: one tenant's report or analytics for one period (idempotent: rebuilt in place)."""
    report_build(tenant_id, kind, datetime.fromisoformat(period_start))
