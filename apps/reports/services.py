"""Reports and analytics: built per tenant and period once the period has ended.

The controller calls reports_schedule every tick; a period's work goes to pool C's LOW queue,
or, while the mode sheds reports or analytics, into the deferred ledger to be built later.
"""

from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Avg, Count, Q

from apps.control.ledger import period_defer, period_deferral_close
from apps.control.modes import Shedding
from apps.leads.models import Lead, LeadStatus
from apps.reports.models import Report, ReportKind
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import REPORTS_LAST_PERIOD_KEY


def report_build(tenant_id: int, kind: str, period_start: datetime) -> Report:
    """Build (or rebuild: idempotent) one tenant's report or analytics for one period."""
    period_end = period_start + timedelta(seconds=settings.REPORT_PERIOD_SECONDS)
    leads = Lead.objects.filter(
        tenant_id=tenant_id, received_at__gte=period_start, received_at__lt=period_end
    )
    if kind == ReportKind.REPORT:
        data = {
            "leads": leads.count(),
            "by_tier": dict(leads.values_list("tier").annotate(n=Count("trace_id"))),
            "by_status": dict(leads.values_list("status").annotate(n=Count("trace_id"))),
            **leads.aggregate(
                qualified=Count("trace_id", filter=Q(is_qualified=True)),
                mean_score=Avg("score"),
                demoted=Count("trace_id", filter=Q(demoted=True)),
            ),
        }
    else:
        rows = (
            leads.exclude(status=LeadStatus.DUPLICATE)
            .values("source", "campaign_id")
            .annotate(leads=Count("trace_id"), mean_score=Avg("score"))
            .order_by("source", "campaign_id")
        )
        data = {"by_source_and_campaign": list(rows)}
    report, _ = Report.objects.update_or_create(
        tenant_id=tenant_id,
        kind=kind,
        period_start=period_start,
        defaults={"period_end": period_end, "data": data},
    )
    period_deferral_close(kind, tenant_id, period_start)
    return report


def reports_schedule(shedding: Shedding, send) -> int:
    """For each period ended since the last call: every tenant with leads in it gets its
    report and analytics, through send(tenant_id, kind, period_start), or deferred when the
    shedding turns them off. Returns how many were sent or deferred."""
    period = settings.REPORT_PERIOD_SECONDS
    now = datetime.now(tz=UTC).timestamp()
    last_ended = int(now // period) * period - period  # start of the last complete period
    client = get_redis()
    previous = client.get(REPORTS_LAST_PERIOD_KEY.format(period=period))
    # The first controller ever starts with the last period; a restart picks up where it was.
    start = int(previous) + period if previous is not None else last_ended
    start = max(start, last_ended - 24 * period)  # after a long outage: the last 24 periods
    done = 0
    for period_start_s in range(start, last_ended + 1, period):
        period_start = datetime.fromtimestamp(period_start_s, tz=UTC)
        tenants = (
            Lead.objects.filter(
                received_at__gte=period_start,
                received_at__lt=period_start + timedelta(seconds=period),
            )
            .values_list("tenant_id", flat=True)
            .distinct()
        )
        for tenant_id in tenants:
            for kind, runs in (
                (ReportKind.REPORT, shedding.reports),
                (ReportKind.ANALYTICS, shedding.analytics),
            ):
                if runs:
                    send(tenant_id, kind, period_start)
                else:
                    period_defer(kind, tenant_id, period_start, shedding.mode)
                done += 1
        client.set(REPORTS_LAST_PERIOD_KEY.format(period=period), period_start_s)
    return done
