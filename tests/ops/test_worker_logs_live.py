"""The pools' logs on the live platform, read from the live stack's log files: a lead that fails
is named by its trace id with the stage and the reason, and a batch of 500 leads is one short
line per stage (its size, tier and duration), not its 500 trace ids."""

import json
import uuid

import pytest

from apps.leads.models import Lead
from tests.live.api import auth, wait_until
from tests.live.logs import LogTail
from tests.pipeline.test_poison_lead import poison_push

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_lead_quarantined_by_pool_a_is_logged_with_its_trace_id_stage_and_reason(
    live_stack, make_tenant
):
    tenant, _ = make_tenant("poisoned")
    pool_a = LogTail(live_stack, "pool-a")
    poison = poison_push(tenant.id, {"name": "x\x00y"})  # as an older intake admitted it

    wait_until(
        lambda: Lead.objects.filter(trace_id=poison, status="failed").exists(),
        timeout=30,
        message="the poison lead was not quarantined",
    )
    lines = wait_until(lambda: pool_a.about(poison), timeout=10, message="no line names it")
    [line] = [line for line in lines if "stage" in line]
    assert line["stage"] == "qualification" and line["level"] == "error"
    assert line["reason"] == "name holds a NUL character"
    assert line["tenant"] == tenant.id
    assert poison in line["event"]
    # Its batch held it alone: every line of the task names it, the batch's own line too.
    assert any(
        other["event"].startswith("pool_a.qualify_leads: 1 lead, normal, ") for other in lines
    )


def test_a_lead_dead_lettered_by_pool_c_is_logged_with_its_trace_id_stage_and_reason(
    live_stack, api, make_tenant, double
):
    path = f"/crm/refusing-{uuid.uuid4().hex[:8]}"
    tenant, key = make_tenant("refused", crm_webhook_url=double.url + path)
    double.configure("crm", path=path, failure_rate=1.0, failure_status=401)
    pool_c = LogTail(live_stack, "pool-c")
    answer = api.post(
        "/api/v1/leads", json={"email": f"x-{uuid.uuid4().hex[:8]}@gmail.com"}, headers=auth(key)
    )
    assert answer.status_code == 202, answer.text
    trace_id = answer.json()["trace_id"]

    wait_until(
        lambda: Lead.objects.filter(trace_id=trace_id, status="dead_lettered").exists(),
        timeout=30,
        message="the lead was not dead-lettered",
    )
    lines = wait_until(lambda: pool_c.about(trace_id), timeout=10, message="no line names it")
    dead = [line for line in lines if "dead-lettered" in line["event"]]
    assert dead, lines
    assert dead[0]["stage"] == "crm" and "401" in dead[0]["reason"]
    assert dead[0]["tenant"] == tenant.id
    # The task that met the refusal carried one lead: each of its lines names it.
    assert all(line["trace_id"] == trace_id for line in lines if line.get("task_id"))


def test_a_batch_of_500_leads_is_one_short_line_per_stage(live_stack, api, make_tenant):
    _, key = make_tenant("bulk")
    pool_a, pool_c = LogTail(live_stack, "pool-a"), LogTail(live_stack, "pool-c")
    leads = [{"email": f"bulk-{uuid.uuid4().hex[:10]}@gmail.com"} for _ in range(500)]
    answer = api.post("/api/v1/leads/batch", json={"leads": leads}, headers=auth(key))
    assert answer.status_code == 202, answer.text
    trace_ids = [result["trace_id"] for result in answer.json()["results"]]

    wait_until(
        lambda: Lead.objects.filter(trace_id__in=trace_ids, status="synced").count() == 500,
        timeout=90,
        interval=0.5,
        message="the 500 leads were not all synced",
    )

    def done_lines(tail: LogTail, task: str) -> list[dict]:
        return [line for line in tail.lines() if line.get("event", "").startswith(f"{task}: ")]

    for tail, task in ((pool_a, "pool_a.qualify_leads"), (pool_c, "pool_c.sync_leads")):
        lines = wait_until(lambda: done_lines(tail, task), timeout=10, message=task)  # noqa: B023
        # The leads came in one request: one batch of 500 (others' leads may share it).
        [line] = [line for line in lines if line.get("batch_size", 0) >= 500]
        assert line["event"].startswith(f"{task}: 500 leads, normal, ")
        assert line["event"].endswith(" s") and line["duration_seconds"] > 0
        assert line["tier"] == "normal" and line["level"] == "info"
        assert len(json.dumps(line)) < 600, line
        # One line for the batch: Celery's "received" line is gone, and no line of the pool
        # lists the batch's trace ids.
        same_task = [other for other in tail.lines() if other.get("task_id") == line["task_id"]]
        assert same_task == [line]
        celery_lines = [other.get("data") or {} for other in tail.lines()]
        assert not [data for data in celery_lines if data.get("id") == line["task_id"]]
        for text in tail.text().splitlines():
            assert sum(trace_id in text for trace_id in trace_ids[:50]) <= 1, text[:300]
