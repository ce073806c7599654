"""The intake's decision and error metrics, scraped from the live API (gunicorn's workers
summed) after a known sequence of requests: each series moves by exactly what it did."""

import uuid

import pytest

from tests.live.api import auth
from tests.ops.scrape import scrape

pytestmark = pytest.mark.django_db(transaction=True)

DECISIONS = "leadflow_intake_decisions_total"
ERRORS = "leadflow_intake_errors_total"


def a_lead(priority: str = "normal") -> dict:
    return {"email": f"{uuid.uuid4().hex[:12]}@example.com", "priority": priority}


def test_each_decision_and_error_is_counted_once(live_stack, api, make_tenant):
    _, key = make_tenant(critical_capacity=1, critical_refill_per_second=0)
    _, budget_key = make_tenant(hourly_budget=1)
    url = f"{live_stack.operator_url}/metrics"
    series = {
        "accepted normal": (DECISIONS, {"tier": "normal", "outcome": "accepted"}),
        "accepted critical": (DECISIONS, {"tier": "critical", "outcome": "accepted"}),
        "demoted": (DECISIONS, {"tier": "normal", "outcome": "demoted"}),
        "duplicate": (DECISIONS, {"outcome": "duplicate"}),
        "invalid": (DECISIONS, {"outcome": "invalid", "reason": "invalid"}),
        "key reused": (DECISIONS, {"outcome": "invalid", "reason": "idempotency_key_reused"}),
        "budget": (DECISIONS, {"outcome": "rate_limited", "reason": "hourly_budget"}),
        "415": (ERRORS, {"status": "415", "reason": "unsupported_media_type"}),
        "401": (ERRORS, {"status": "401", "reason": "not_authenticated"}),
    }
    before = scrape(url)
    start = {name: before.value(metric, **labels) for name, (metric, labels) in series.items()}

    repeated = a_lead()
    for lead in (repeated, a_lead(), a_lead()):
        assert api.post("/api/v1/leads", json=lead, headers=auth(key)).status_code == 202
    assert api.post("/api/v1/leads", json=repeated, headers=auth(key)).status_code == 200
    tiers = [api.post("/api/v1/leads", json=a_lead("critical"), headers=auth(key)).json()["tier"]]
    tiers.append(
        api.post("/api/v1/leads", json=a_lead("critical"), headers=auth(key)).json()["tier"]
    )
    assert tiers == ["critical", "normal"]
    batch = {"leads": [a_lead(), {"email": "not-an-email"}, a_lead()]}
    assert api.post("/api/v1/leads/batch", json=batch, headers=auth(key)).status_code == 202
    assert api.post("/api/v1/leads", json={"name": "x"}, headers=auth(key)).status_code == 400
    keyed = {**auth(key), "Idempotency-Key": "metrics-1"}
    keyed_lead = a_lead()
    assert api.post("/api/v1/leads", json=keyed_lead, headers=keyed).status_code == 202
    replay = api.post("/api/v1/leads", json=keyed_lead, headers=keyed)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert api.post("/api/v1/leads", json=a_lead(), headers=keyed).status_code == 422
    assert api.post("/api/v1/leads", json=a_lead(), headers=auth(budget_key)).status_code == 202
    assert api.post("/api/v1/leads", json=a_lead(), headers=auth(budget_key)).status_code == 429
    plain = {**auth(key), "Content-Type": "text/plain"}
    assert api.post("/api/v1/leads", content=b"{}", headers=plain).status_code == 415
    assert api.post("/api/v1/leads", json=a_lead()).status_code == 401

    after = scrape(url)
    moved = {
        name: after.value(metric, **labels) - start[name]
        for name, (metric, labels) in series.items()
    }
    assert moved == {
        # singles, the batch's two, the keyed lead, the budget tenant's first
        "accepted normal": 3 + 2 + 1 + 1,
        "accepted critical": 1,
        "demoted": 1,
        "duplicate": 2,  # a repeat, and a replay (it was counted accepted the first time)
        "invalid": 2,  # one in the batch, one single
        "key reused": 1,
        "budget": 1,
        "415": 1,
        "401": 1,
    }
