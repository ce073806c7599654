"""One tenant's CRM trouble stays that tenant's, on the live platform: tenants X, Y and Z post
leads at the same moment, one dispatch pass puts them in one shared batch (the control process
is stopped for the module, the pass runs here), and pool C meets X's CRM refusing, failing,
dripping or answering a huge body, while Y (a CRM of its own) and Z (the local adapter) must
reach `synced` within seconds. Each tenant's CRM is a path of the session's HTTP double.
"""

import time
import uuid
from collections import Counter

import pytest
from django.conf import settings

from apps.control.dispatcher import Dispatcher
from apps.control.models import DeferredWork
from apps.control.modes import Shedding
from apps.control.state import shedding_publish
from apps.crm.models import DeadLetter
from apps.leads.models import Lead
from leadflow.celery import app
from tests.doubles.postgres_faults import (
    postgres_cancel,
    postgres_refusing,
    postgres_table_locked,
    postgres_waiting_on,
)
from tests.factories import lead_for_crm_make
from tests.live.api import auth, wait_until
from tests.ops.scrape import scrape

pytestmark = pytest.mark.django_db(transaction=True)

TERMINAL = {"synced", "failed", "duplicate", "dead_lettered"}


@pytest.fixture
def xyz(make_tenant, double, control_stopped):
    """Tenants X and Y with a CRM each on the double, Z with the local adapter."""

    def webhook(name: str):
        path = f"/crm/{name}-{uuid.uuid4().hex[:8]}"
        tenant, key = make_tenant(name, crm_webhook_url=double.url + path)
        return tenant, key, path

    return webhook("x"), webhook("y"), (*make_tenant("z"), None)


def post(api, key: str, count: int) -> list[str]:
    """Leads under the scoring threshold (free-mail, nothing else): straight from A to C."""
    leads = [{"email": f"someone-{uuid.uuid4().hex[:10]}@gmail.com"} for _ in range(count)]
    response = api.post("/api/v1/leads/batch", json={"leads": leads}, headers=auth(key))
    assert response.status_code == 202, response.text
    return [result["trace_id"] for result in response.json()["results"]]


def send_shared_batch(api, xyz, counts=(3, 4, 4)) -> list[list[str]]:
    """X's leads first (received first, so first in pool C's batch), then Y's, then Z's; one
    dispatch pass sends them to pool A as one batch, which hands them to C as one message."""
    accepted = [post(api, key, count) for (_, key, _), count in zip(xyz, counts, strict=True)]
    assert Dispatcher().dispatch_once() >= sum(counts)
    return accepted


def statuses(trace_ids: list[str]) -> Counter:
    return Counter(Lead.objects.filter(trace_id__in=trace_ids).values_list("status", flat=True))


def wait_for(trace_ids: list[str], status: str, timeout: float) -> None:
    try:
        wait_until(lambda: statuses(trace_ids) == {status: len(trace_ids)}, timeout=timeout)
    except AssertionError:
        raise AssertionError(
            f"not all {status} after {timeout}s: {dict(statuses(trace_ids))}"
        ) from None


def accounting_closes(tenant, accepted: list[str]) -> None:
    """accepted = synced + failed + duplicate + dead-lettered (+ pending, none left here)."""
    counts = Counter(Lead.objects.filter(tenant=tenant).values_list("status", flat=True))
    assert sum(counts.values()) == len(accepted), counts
    assert set(counts) <= TERMINAL, counts


def pool_c_metric(live_stack, name: str) -> float:
    port = live_stack.env["LEADFLOW_POOL_C_METRICS_PORT"]
    return scrape(f"http://127.0.0.1:{port}/metrics").value(name, dependency="crm")


def test_a_tenants_crm_refusing_dead_letters_its_leads_only(api, double, xyz):
    (x, _, x_path), (y, _, _), (z, _, _) = xyz
    double.configure("crm", path=x_path, failure_rate=1.0, failure_status=401)

    x_ids, y_ids, z_ids = send_shared_batch(api, xyz)

    wait_for(y_ids + z_ids, "synced", timeout=30)
    wait_for(x_ids, "dead_lettered", timeout=30)
    assert len(double.calls("crm", path=x_path)) == 1  # a 401 is the endpoint's: not retried
    for tenant, accepted in ((x, x_ids), (y, y_ids), (z, z_ids)):
        accounting_closes(tenant, accepted)


def test_a_tenants_crm_failing_retries_its_leads_on_schedule_then_dead_letters_them(
    api, double, xyz
):
    (x, _, x_path), (y, _, _), (z, _, _) = xyz
    double.configure("crm", path=x_path, failure_rate=1.0, failure_status=503)

    x_ids, y_ids, z_ids = send_shared_batch(api, xyz, counts=(2, 4, 4))

    wait_for(y_ids + z_ids, "synced", timeout=20)
    wait_for(x_ids, "dead_lettered", timeout=60)
    letters = DeadLetter.objects.filter(lead_id__in=x_ids)
    assert {letter.attempts for letter in letters} == {settings.CRM_MAX_RETRIES + 1}
    assert all(letter.error.startswith("CrmUnavailable") for letter in letters)
    # The first try, then retries 1, 2 and 4 s apart (+/- 20 %), read from the CRM's side:
    # never sooner than the jitter allows (a uniform 0-4 s draw would be), at most a generous
    # 1.5 s of scheduling later (a loaded 2-core machine).
    calls = double.calls("crm", path=x_path)
    assert [call["status"] for call in calls] == [503] * (settings.CRM_MAX_RETRIES + 1)
    assert {lead["trace_id"] for call in calls for lead in call["body"]["leads"]} == set(x_ids)
    attempts = [call["at"] for call in calls]
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:], strict=False)]
    print(f"X's CRM was tried {len(attempts)} times, apart by", [round(g, 2) for g in gaps])
    assert (settings.CRM_RETRY_BASE_SECONDS, settings.CRM_RETRY_JITTER) == (1.0, 0.2)
    for gap, nominal in zip(gaps, (1.0, 2.0, 4.0), strict=True):
        assert 0.8 * nominal - 0.05 <= gap <= 1.2 * nominal + 1.5, gaps
    # Then the dead letter, right after the last attempt, and no attempt after it.
    lettered_at = min(letter.created_at.timestamp() for letter in letters)
    assert 0 <= lettered_at - attempts[-1] <= 3.0, (lettered_at, attempts[-1])
    time.sleep(2)
    assert len(double.calls("crm", path=x_path)) == settings.CRM_MAX_RETRIES + 1
    for tenant, accepted in ((x, x_ids), (y, y_ids), (z, z_ids)):
        accounting_closes(tenant, accepted)


def test_a_tenants_crm_that_recovers_gets_its_leads_on_a_retry(api, double, xyz):
    (_, _, x_path), _, _ = xyz
    double.configure("crm", path=x_path, fail_first=2, failure_status=503)

    x_ids, y_ids, z_ids = send_shared_batch(api, xyz)

    wait_for(y_ids + z_ids, "synced", timeout=20)
    wait_for(x_ids, "synced", timeout=30)
    assert [call["status"] for call in double.calls("crm", path=x_path)] == [503, 503, 200]
    assert not DeadLetter.objects.filter(lead_id__in=x_ids).exists()


def test_a_tenants_dripping_crm_holds_nobody_else_and_each_call_ends_at_its_deadline(
    api, double, xyz, live_stack
):
    (x, _, x_path), (y, _, _), (z, _, _) = xyz
    # A byte every 500 ms: each read is quick, the whole reply would take about a minute.
    double.configure("crm", path=x_path, drip_ms=500)
    hits = pool_c_metric(live_stack, "leadflow_outbound_deadline_hits_total")

    started = time.monotonic()
    x_ids, y_ids, z_ids = send_shared_batch(api, xyz)

    wait_for(y_ids + z_ids, "synced", timeout=15)
    others_synced = time.monotonic() - started
    wait_for(x_ids, "dead_lettered", timeout=60)
    print(
        f"X's CRM dripping: Y and Z synced {others_synced:.1f} s after posting, X dead-lettered "
        f"{time.monotonic() - started:.1f} s after"
    )
    assert len(double.calls("crm", path=x_path)) == settings.CRM_MAX_RETRIES + 1
    assert pool_c_metric(live_stack, "leadflow_outbound_deadline_hits_total") >= hits + 4
    for tenant, accepted in ((x, x_ids), (y, y_ids), (z, z_ids)):
        accounting_closes(tenant, accepted)


def test_a_huge_crm_reply_is_read_up_to_the_cap_and_shown_cut(api, double, xyz, live_stack):
    (_, x_key, x_path), _, _ = xyz
    double.configure("crm", path=x_path, body_bytes=30_000_000)
    truncated = pool_c_metric(live_stack, "leadflow_outbound_response_truncated_total")

    x_ids, y_ids, z_ids = send_shared_batch(api, xyz)

    wait_for(x_ids + y_ids + z_ids, "synced", timeout=30)
    shown = api.get(f"/api/v1/leads/{x_ids[0]}", headers=auth(x_key)).json()
    response = shown["stages"]["crm"]["response"]
    assert response["status"] == 200 and response["body_truncated"] is True
    assert len(response["body"]) <= 2000
    assert pool_c_metric(live_stack, "leadflow_outbound_response_truncated_total") > truncated


def test_a_redelivered_message_while_the_first_run_works_makes_one_delivery(double, xyz):
    (x, _, x_path), _, _ = xyz
    double.configure("crm", path=x_path, latency_ms=1500)  # under the CRM's 2 s deadline
    trace_ids = [str(lead_for_crm_make(x).trace_id) for _ in range(3)]
    task_id = str(uuid.uuid4())

    # What the broker does when a visibility timeout passes while the first run still works:
    # the same message, handed out again.
    for _ in range(2):
        app.send_task(
            "pool_c.sync_leads", args=[trace_ids, "normal"], queue="c.normal", task_id=task_id
        )
        time.sleep(0.5)

    wait_for(trace_ids, "synced", timeout=30)
    time.sleep(4)  # a second delivery would have reached the double by now
    calls = double.calls("crm", path=x_path)
    assert len(calls) == 1, [call["headers"].get("webhook-id") for call in calls]


def test_a_database_error_after_delivery_is_retried_without_a_second_delivery(double, xyz):
    """PostgreSQL fails the recording (a statement cancelled: an OperationalError, as a lost
    connection is): the task retries, the CRM is not sent the leads again, nothing is
    dead-lettered or quarantined."""
    (x, _, x_path), _, _ = xyz
    trace_ids = [str(lead_for_crm_make(x).trace_id) for _ in range(2)]

    with postgres_table_locked("crm_crmsync"):
        app.send_task("pool_c.sync_leads", args=[trace_ids, "normal"], queue="c.normal")
        blocked = wait_until(lambda: postgres_waiting_on("crm_crmsync"), timeout=20)
        assert len(double.calls("crm", path=x_path)) == 1
        postgres_cancel(blocked)
        time.sleep(3)  # the task fails and is retried (1 s); the retry waits on the lock too

    wait_for(trace_ids, "synced", timeout=30)
    assert len(double.calls("crm", path=x_path)) == 1
    assert not DeadLetter.objects.filter(lead_id__in=trace_ids).exists()


def test_a_lead_whose_sync_cannot_be_recorded_is_quarantined_alone(api, double, xyz):
    (x, _, x_path), (y, _, _), (z, _, _) = xyz
    x_ids = post(api, xyz[0][1], 3)
    y_ids, z_ids = post(api, xyz[1][1], 3), post(api, xyz[2][1], 3)
    poison = x_ids[1]

    with postgres_refusing("crm_crmsync", poison):
        assert Dispatcher().dispatch_once() >= 9
        wait_for(y_ids + z_ids + [x_ids[0], x_ids[2]], "synced", timeout=30)
        wait_for([poison], "failed", timeout=10)

    lead = Lead.objects.get(trace_id=poison)
    assert lead.failed_stage == "crm" and "refused for the test" in lead.failed_reason
    assert len(double.calls("crm", path=x_path)) == 1  # found among the records, not resent
    for tenant, accepted in ((x, x_ids), (y, y_ids), (z, z_ids)):
        accounting_closes(tenant, accepted)


def test_a_retry_for_a_paused_tier_waits_in_the_ledger_not_in_its_queue(double, xyz):
    """While LOW is paused its queues receive nothing: a tenant's retry waits in the deferred
    ledger (sent when LOW resumes), not in c.low."""
    (x, _, x_path), _, _ = xyz
    double.configure("crm", path=x_path, failure_rate=1.0, failure_status=503)
    trace_ids = [str(lead_for_crm_make(x, tier="low").trace_id) for _ in range(2)]
    shedding_publish(Shedding(low_paused=True))  # as the controller does (it is stopped here)
    try:
        time.sleep(1)  # every process reads the state at most every 0.5 s
        # A batch pool C had taken just before the pause.
        app.send_task("pool_c.sync_leads", args=[trace_ids, "low"], queue="c.low")
        waiting = DeferredWork.objects.filter(
            lead_id__in=trace_ids, kind="crm_sync", reason="paused", done_at=None
        )
        wait_until(lambda: waiting.count() == 2, timeout=20, message="not in the ledger")
        time.sleep(2)  # a retry sent to c.low would have reached the CRM by now
    finally:
        shedding_publish(Shedding())
    assert len(double.calls("crm", path=x_path)) == 1
    assert statuses(trace_ids) == {"enriched": 2}
