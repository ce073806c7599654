"""Metrics of the live platform (gunicorn -w 2, pools A prefork / B / C threads, the control
process), scraped over HTTP after a known sequence of requests and tasks: each value moves by
exactly what the sequence did."""

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from apps.control.models import DeferredKind, DeferredReason, DeferredWork, Mode, Policy
from apps.crm.models import DeadLetter
from apps.leads.models import Lead
from leadflow import redis_keys
from leadflow.queues import POOLS
from leadflow.redis_conn import get_redis
from tests.live.api import auth, wait_until
from tests.live.stack import ROOT, _die_with_parent, free_port
from tests.ops.scrape import scrape

pytestmark = pytest.mark.django_db(transaction=True)


def lead(tier: str, qualified: bool = True) -> dict:
    name = uuid.uuid4().hex[:10]
    if qualified:
        return {
            "email": f"{name}@analytical.io",
            "name": "Ada Lovelace",
            "company": "Analytical Engines",
            "phone": "+44 20 7946 0958",
            "source": "google_ads",
            "region": "gb",
            "priority": tier,
        }
    return {"email": f"{name}@gmail.com", "priority": tier}


def pool_url(stack, pool: str) -> str:
    return f"http://127.0.0.1:{stack.env[f'LEADFLOW_POOL_{pool.upper()}_METRICS_PORT']}/metrics"


def control_url(stack) -> str:
    return f"http://127.0.0.1:{stack.env['LEADFLOW_CONTROL_METRICS_PORT']}/metrics"


def post_leads(api, key: str, leads: list[dict]) -> None:
    for body in leads:
        response = api.post("/api/v1/leads", json=body, headers=auth(key))
        assert response.status_code == 202, response.text


def test_api_metrics_add_up_every_gunicorn_worker(live_stack, api, make_tenant):
    """gunicorn runs 2 workers; every scrape, whichever worker answers it, shows the requests
    both served (multiprocess mode), for the intake's fast-path POSTs and Django's views alike."""
    _, key = make_tenant("api-metrics")
    url = f"{live_stack.operator_url}/metrics"
    intake = {"name": "leadflow_intake_requests_total", "path": "/api/v1/leads", "status": "202"}
    timed = {"name": "leadflow_intake_request_duration_seconds_count", "path": "/api/v1/leads"}
    healthz = {
        "name": "django_http_responses_total_by_status_view_method_total",
        "status": "200",
        "view": "healthz",
    }
    before = scrape(url)
    counts = {
        "intake": before.value(**intake),
        "timed": before.value(**timed),
        "healthz": before.value(**healthz),
    }

    post_leads(api, key, [lead("normal", qualified=False) for _ in range(30)])
    for _ in range(20):
        assert httpx.get(f"{live_stack.api_url}/healthz").status_code == 200

    for _ in range(6):  # each on a new connection: gunicorn's sync workers take turns
        after = scrape(url)
        assert after.value(**intake) == counts["intake"] + 30
        assert after.value(**timed) == counts["timed"] + 30
        # this scrape itself is not counted until it is answered; the earlier ones are
        assert after.value(**healthz) == counts["healthz"] + 20


def test_pool_metrics_count_the_stages_each_lead_went_through(live_stack, api, make_tenant):
    """12 critical leads, 7 of which qualify: pool A qualifies 12, B enriches 7, C syncs 12;
    every run is timed and ended in success; pool A's two prefork children add up."""
    tenant, key = make_tenant("pool-metrics")
    before = {pool: scrape(pool_url(live_stack, pool)) for pool in POOLS}

    post_leads(api, key, [lead("critical", qualified=i < 7) for i in range(12)])
    wait_until(
        lambda: Lead.objects.filter(tenant=tenant, status="synced").count() == 12,
        timeout=60,
        message="the 12 leads synced",
    )
    qualified = Lead.objects.filter(tenant=tenant, is_qualified=True).count()
    assert qualified == 7

    expected = {
        ("a", "qualification"): 12,
        ("b", "enrichment"): qualified,
        ("c", "crm_sync"): 12,
    }

    def moved(server: str, name: str, **labels) -> float:
        now = scrape(pool_url(live_stack, server))
        return now.value(name, **labels) - before[server].value(name, **labels)

    for (pool, stage), leads in expected.items():
        labels = {"pool": pool, "stage": stage, "tier": "critical"}
        # metrics are written when a task ends, just after its leads are stored
        wait_until(
            lambda p=pool, la=labels, n=leads: moved(p, "leadflow_stage_leads_total", **la) == n,
            timeout=10,
            message=f"pool {pool} counted {leads} leads",
        )
        runs = moved(pool, "leadflow_stage_tasks_total", outcome="success", **labels)
        assert runs >= 1
        assert moved(pool, "leadflow_stage_tasks_total", outcome="failure", **labels) == 0
        assert moved(pool, "leadflow_stage_duration_seconds_count", **labels) == runs
        assert moved(pool, "leadflow_stage_duration_seconds_sum", **labels) > 0
        assert moved(pool, "leadflow_stage_batch_size_sum", pool=pool, stage=stage) == leads
        assert moved(pool, "leadflow_stage_batch_size_count", pool=pool, stage=stage) == runs


def test_pool_metrics_count_retries_and_the_failure_that_dead_letters(
    live_stack, api, make_tenant, double
):
    """A CRM that always fails: pool C retries the lead 3 times (LEADFLOW_CRM_MAX_RETRIES),
    then gives up and dead-letters it; the control process's dead letter count goes up by one.
    A tenant's retry is a message of its own (its batch-mates are not retried with it), so
    each attempt is a task run that succeeds: it did what it could and scheduled the rest."""
    tenant, key = make_tenant("crm-metrics", crm_webhook_url=f"{double.url}/crm/hook")
    double.configure("crm", failure_rate=1.0)
    pool_c, control = scrape(pool_url(live_stack, "c")), scrape(control_url(live_stack))
    labels = {"pool": "c", "stage": "crm_sync", "tier": "critical"}

    post_leads(api, key, [lead("critical")])
    wait_until(
        lambda: DeadLetter.objects.filter(tenant=tenant).exists(), timeout=60, message="dead"
    )

    def moved(name: str, **more) -> float:
        now = scrape(pool_url(live_stack, "c"))
        return now.value(name, **labels, **more) - pool_c.value(name, **labels, **more)

    wait_until(lambda: moved("leadflow_stage_tasks_total", outcome="success") == 4, timeout=10)
    assert moved("leadflow_stage_tasks_total", outcome="failure") == 0
    assert moved("leadflow_stage_leads_total") == 4  # the one lead, in each of the 4 runs

    open_before = control.value("leadflow_dead_letters", state="open")
    wait_until(
        lambda: (
            scrape(control_url(live_stack)).value("leadflow_dead_letters", state="open")
            == open_before + 1
        ),
        timeout=10,
        message="the control process counts the new dead letter",
    )


@contextlib.contextmanager
def low_paused():
    """Operators pause LOW (overload policy); the controller applies it within a tick."""
    policy = Policy.current()
    Policy.objects.filter(pk=policy.pk).update(pause_low=True)
    try:
        yield
    finally:
        Policy.objects.filter(pk=policy.pk).update(pause_low=False)


def test_control_metrics_show_the_platform_as_it_is(live_stack, api, make_tenant):
    """LOW paused, 7 low leads of a tenant waiting, an open AI breaker and a shed report: the
    control process's scrape shows each, with the tenant under its own label; all back to normal
    when LOW resumes."""
    tenant, key = make_tenant("control-metrics", critical_capacity=30)
    client = get_redis()
    # The busiest tenant this hour, so it ranks among the labelled ones (as a tenant that has
    # accepted 500,000 leads would), well under its hourly budget.
    client.hset(
        redis_keys.budget_key(tenant.id),
        mapping={"hour": int(client.time()[0]) // 3600, "used": 500_000},
    )
    url = control_url(live_stack)
    me = str(tenant.id)
    with low_paused():
        wait_until(lambda: scrape(url).value("leadflow_low_paused") == 1, timeout=10)
        post_leads(api, key, [lead("low") for _ in range(7)])
        client.set("lf:ai:pybreaker:state", "open")
        DeferredWork.objects.create(
            kind=DeferredKind.REPORT,
            reason=DeferredReason.SHED,
            tenant=tenant,
            period_start="2026-01-01T00:00:00Z",
            mode=Mode.THIN,
        )
        try:
            wait_until(
                lambda: scrape(url).value("leadflow_tenant_backlog", tenant=me, tier="low") == 7,
                timeout=15,
                message="the tenant's 7 low leads, under its own label",
            )
            # Per-tenant figures are read at the scrape, per-tier ones at the last tick (≤ 1 s).
            now = wait_until(
                lambda: (s := scrape(url)).value("leadflow_tier_backlog", tier="low") >= 7 and s,
                timeout=5,
                message="the tick's low backlog",
            )
            assert now.value("leadflow_control_leader") == 1
            assert now.value("leadflow_tier_lag_seconds", tier="low") > 0
            assert now.value("leadflow_mode", mode="normal") == 1
            assert now.value("leadflow_mode", mode="thin") == 0
            assert now.value("leadflow_mode_forced") == 0
            assert now.value("leadflow_tenant_critical_credits", tenant=me) == 30
            for pool in POOLS:
                assert now.value("leadflow_pool_workers", pool=pool) >= 1, pool
            assert now.value("leadflow_breaker_state", dependency="ai", state="open") == 1
            assert now.value("leadflow_breaker_state", dependency="ai", state="closed") == 0
            open_reports = DeferredWork.objects.filter(
                kind=DeferredKind.REPORT, reason=DeferredReason.SHED, done_at__isnull=True
            ).count()
            assert now.value("leadflow_deferred_open", kind="report", reason="shed") == open_reports
            assert time.time() - now.value("leadflow_control_tick_timestamp_seconds") < 5
        finally:
            client.delete("lf:ai:pybreaker:state")
    wait_until(
        lambda: scrape(url).value("leadflow_tenant_backlog", tenant=me, tier="low") == 0,
        timeout=30,
        message="LOW resumed: the tenant's leads leave the inbox",
    )
    assert scrape(url).value("leadflow_low_paused") == 0
    client.delete(redis_keys.budget_key(tenant.id))


def test_flower_serves_its_own_metrics_with_the_pools_workers(live_stack):
    """Flower (as the Procfile starts it) exposes /metrics: each pool's worker online."""
    port = free_port()
    argv = [
        sys.executable,
        *["-m", "celery", "-A", "leadflow", "flower", "--address=127.0.0.1", f"--port={port}"],
    ]
    flower = subprocess.Popen(
        argv,
        cwd=ROOT,
        # flowerconfig.py refuses weak credentials
        env={**live_stack.env, "FLOWER_BASIC_AUTH": "ops:a-long-enough-password-1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:

        def workers_online() -> set[str]:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.TransportError:
                return set()
            return {
                line.split('worker="')[1].split("@")[0]
                for line in text.splitlines()
                if line.startswith("flower_worker_online{") and line.endswith(" 1.0")
            }

        expected = {f"pool-{pool}-{os.getpid()}" for pool in POOLS}  # tests/live/stack.py
        wait_until(
            lambda: expected <= workers_online(),
            timeout=45,
            interval=0.5,
            message="Flower sees each pool's worker online",
        )
        # the UI needs the credentials; /metrics is for Prometheus, without them
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 401
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(flower.pid, signal.SIGTERM)
        try:
            flower.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(flower.pid, signal.SIGKILL)
            flower.wait(timeout=5)
