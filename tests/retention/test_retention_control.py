"""The retention job as the control process runs it (apps/control/database_work.py): a real
run_control on the test database and a redis-server of the test's own (so its leader lease is
its own, whatever else runs), its metrics scraped."""

import os
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.utils import timezone

from apps.leads.models import Lead, LeadStatus
from apps.retention.models import RetentionRun
from tests.control.outage_services import process_env, start_control
from tests.doubles.redis_server import private_redis
from tests.factories import lead_for_crm_make
from tests.live.api import wait_until
from tests.live.stack import free_port
from tests.ops.scrape import scrape
from tests.retention.test_retention import _tenant

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_control_process_runs_the_job_audits_and_counts_it(tmp_path):
    tenant = _tenant(retention_hours=2)
    old, recent = (lead_for_crm_make(tenant, status=LeadStatus.SYNCED) for _ in range(2))
    Lead.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(hours=3))
    test_db = settings.DATABASES["default"]["NAME"]
    database_url = urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{test_db}"))
    port = free_port()
    with private_redis(tmp_path / "redis") as server:
        env = process_env(database_url, server.url, LEADFLOW_CONTROL_METRICS_PORT=str(port))
        control = start_control(env, tmp_path)
        try:
            run = wait_until(
                lambda: RetentionRun.objects.filter(leads__gt=0).first(),
                timeout=90,
                interval=0.5,
                message=f"no retention run:\n{control.log()[-3000:]}",
            )
            figures = scrape(f"http://127.0.0.1:{port}/metrics")
        finally:
            control.stop()
    assert (run.leads, run.complete, run.by_tenant) == (1, True, {str(tenant.id): 1})
    assert Lead.objects.get(pk=old.pk).anonymized_at is not None
    assert Lead.objects.get(pk=recent.pk).email == recent.email
    assert figures.value("leadflow_retention_anonymized_leads_total") == 1
    assert figures.value("leadflow_retention_runs_total", outcome="complete") >= 1
    assert figures.value("leadflow_retention_last_run_timestamp_seconds") > 0
