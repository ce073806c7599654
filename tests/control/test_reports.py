"""Reports and analytics: scheduled per tenant for each ended period, deferred to the ledger
while the mode sheds them, and built (idempotently) when their turn comes."""

from datetime import UTC, datetime, timedelta

import pytest

from apps.control.models import DeferredKind, DeferredWork, Mode
from apps.control.modes import Shedding
from apps.leads.models import LeadStatus
from apps.reports.models import Report
from apps.reports.services import report_build, reports_schedule
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import REPORTS_LAST_PERIOD_KEY
from tests.factories import lead_make, tenant_make

PERIOD = 60


@pytest.fixture
def ended_period(settings, make_tenant_in_db):
    """A tenant with leads in the last ended period; the schedule resumes just before it."""
    settings.REPORT_PERIOD_SECONDS = PERIOD
    now = datetime.now(tz=UTC).timestamp()
    start = int(now // PERIOD) * PERIOD - PERIOD
    get_redis().set(REPORTS_LAST_PERIOD_KEY.format(period=PERIOD), start - PERIOD)
    tenant = make_tenant_in_db()
    period_start = datetime.fromtimestamp(start, tz=UTC)
    for i, (tier, qualified, source) in enumerate(
        [("critical", True, "ads"), ("normal", False, "ads"), ("normal", True, "form")]
    ):
        lead_make(
            tenant,
            tier=tier,
            status=LeadStatus.SYNCED,
            email=f"r{i}@example.com",
            source=source,
            score=80 if qualified else 10,
            is_qualified=qualified,
            received_at=period_start + timedelta(seconds=5 + i),
        )
    yield tenant, period_start
    get_redis().delete(REPORTS_LAST_PERIOD_KEY.format(period=PERIOD))


@pytest.fixture
def make_tenant_in_db(db):
    return lambda: tenant_make("reports")[0]


def test_a_shed_report_goes_to_the_ledger_and_a_running_one_is_sent(ended_period):
    tenant, period_start = ended_period
    sent = []
    shedding = Shedding(mode=Mode.THIN, reports=False, analytics=True)
    reports_schedule(shedding, lambda *args: sent.append(args))
    assert (tenant.id, "analytics", period_start) in sent
    assert not [s for s in sent if s[1] == "report"]
    deferred = DeferredWork.objects.get(kind=DeferredKind.REPORT, tenant=tenant)
    assert (deferred.period_start, deferred.mode, deferred.done_at) == (
        period_start,
        Mode.THIN,
        None,
    )
    # The same period is not scheduled twice.
    again = []
    reports_schedule(Shedding(), lambda *args: again.append(args))
    assert not [a for a in again if a[0] == tenant.id]


def test_building_a_report_counts_the_periods_leads_and_closes_its_ledger_row(ended_period):
    tenant, period_start = ended_period
    reports_schedule(Shedding(mode=Mode.THIN, reports=False, analytics=False), lambda *a: None)
    assert DeferredWork.objects.filter(tenant=tenant, done_at__isnull=True).count() == 2

    report = report_build(tenant.id, "report", period_start)
    assert report.data["leads"] == 3
    assert report.data["by_tier"] == {"critical": 1, "normal": 2}
    assert report.data["qualified"] == 2
    analytics = report_build(tenant.id, "analytics", period_start)
    by_source = {row["source"]: row["leads"] for row in analytics.data["by_source_and_campaign"]}
    assert by_source == {"ads": 2, "form": 1}
    assert not DeferredWork.objects.filter(tenant=tenant, done_at__isnull=True).exists()

    report_build(tenant.id, "report", period_start)  # rebuilt in place, not doubled
    assert Report.objects.filter(tenant=tenant).count() == 2
