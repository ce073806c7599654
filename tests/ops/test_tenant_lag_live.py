"""Lag per tenant on the live platform: the control process exports the age of the oldest lead
waiting in each tenant's inbox (`leadflow_tenant_lag_seconds{tenant,tier}`), and the series
goes once the inbox drains. LOW is paused by the operators' switch to hold a lead waiting."""

import time
import uuid

import pytest

from apps.control.models import Policy
from apps.leads.models import Lead
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import CONTROL_STATE_KEY
from tests.live.api import auth, wait_until
from tests.ops.scrape import scrape

pytestmark = pytest.mark.django_db(transaction=True)

LAG = "leadflow_tenant_lag_seconds"


def low_published(paused: bool) -> bool:
    return get_redis().hget(CONTROL_STATE_KEY, "low_paused") == str(paused).encode()


def control_metrics(live_stack):
    return scrape(f"http://127.0.0.1:{live_stack.env['LEADFLOW_CONTROL_METRICS_PORT']}/metrics")


def test_a_waiting_leads_age_is_its_tenants_lag_until_the_inbox_drains(
    live_stack, api, make_tenant
):
    tenant, key = make_tenant("lagging")
    label = str(tenant.id)
    policy = Policy.current()
    Policy.objects.filter(pk=policy.pk).update(pause_low=True, updated_by="test")
    try:
        wait_until(lambda: low_published(True), timeout=10, message="LOW not paused")
        body = {"email": f"late-{uuid.uuid4().hex[:8]}@gmail.com", "priority": "low"}
        posted_at = time.time()
        answer = api.post("/api/v1/leads", json=body, headers=auth(key))
        assert answer.status_code == 202, answer.text
        trace_id = answer.json()["trace_id"]

        # The tenant gets a label of its own once ranked (a second or two), and its low lag is
        # the age of the lead it posted, growing while it waits.
        def lag() -> float:
            return control_metrics(live_stack).value(LAG, tenant=label, tier="low")

        first = wait_until(lambda: lag() >= 2.0, timeout=20, message="no lag exported")
        assert first <= time.time() - posted_at + 0.5
        time.sleep(2.0)
        later = lag()
        assert later >= first + 1.5
        assert later <= time.time() - posted_at + 0.5
        metrics = control_metrics(live_stack)
        assert not metrics.has(LAG, tenant=label, tier="normal")  # nothing waits there
        assert metrics.value("leadflow_tenant_backlog", tenant=label, tier="low") == 1
    finally:
        Policy.objects.filter(pk=policy.pk).update(pause_low=False, updated_by="test")
        wait_until(lambda: low_published(False), timeout=10, message="LOW still paused")

    # Drained: the lead goes through, and its tenant's series is gone (not left at its age).
    wait_until(
        lambda: not control_metrics(live_stack).has(LAG, tenant=label),
        timeout=20,
        message="the tenant's lag is still exported after its inbox drained",
    )
    wait_until(
        lambda: Lead.objects.filter(trace_id=trace_id, status="synced").exists(),
        timeout=60,
        message="the LOW lead did not reach synced after the pause",
    )
