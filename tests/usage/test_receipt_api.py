"""GET /api/v1/usage over HTTP against the live stack (gunicorn, the pools, control): two
tenants send leads, some are refused by their limits, and each tenant's receipt holds exactly
what the API answered it, and nothing of the other's; its synced leads come with the p50 and
p99 time from received to synced. Bad ranges are 400, no key 401."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.live.api import auth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

REFUSALS = ("ip_rate", "tenant_rate", "hourly_budget", "backpressure")


def a_lead(priority: str = "normal") -> dict:
    return {"email": f"{uuid.uuid4().hex[:12]}@example.com", "name": "Ada", "priority": priority}


def receipt_totals(api, key: str, **params) -> dict:
    """The receipt's counts summed over its hours (a test may straddle an hour's end)."""
    answer = api.get("/api/v1/usage", params=params, headers=auth(key))
    assert answer.status_code == 200, answer.text
    hours = answer.json()["hours"]
    counts = [name for name in hours[-1] if name != "hour" and not name.endswith("_seconds")]
    totals = {name: sum(hour[name] for hour in hours) for name in counts}
    totals["hours"] = hours
    return totals


def test_each_tenant_gets_its_own_receipt_equal_to_what_it_was_answered(api, make_tenant):
    # Tenant A: a budget of 4 leads this hour and no critical credit.
    _, key_a = make_tenant("receipt-a", hourly_budget=4, critical_capacity=0)
    # Tenant B: one request a second.
    _, key_b = make_tenant("receipt-b", rate_limit_per_second=1)

    first = a_lead()
    batch = api.post(
        "/api/v1/leads/batch",
        json={"leads": [first, a_lead(), a_lead(), a_lead("critical")]},
        headers=auth(key_a),
    )
    assert batch.status_code == 202, batch.text
    assert batch.json()["accepted"] == 4
    assert batch.json()["results"][3]["demoted"] is True
    over = api.post(
        "/api/v1/leads/batch", json={"leads": [a_lead(), a_lead()]}, headers=auth(key_a)
    )
    assert over.status_code == 429 and over.json()["refused"] == 2
    assert {result["limit"] for result in over.json()["results"]} == {"hourly_budget"}
    again = api.post("/api/v1/leads", json=first, headers=auth(key_a))
    assert again.status_code == 200 and again.json()["duplicate"] is True

    one = api.post("/api/v1/leads", json=a_lead(), headers=auth(key_b))
    refused = api.post(
        "/api/v1/leads/batch", json={"leads": [a_lead(), a_lead(), a_lead()]}, headers=auth(key_b)
    )
    assert one.status_code == 202
    assert refused.status_code == 429 and refused.json()["limit"] == "tenant_rate", refused.text

    a = receipt_totals(api, key_a)
    assert (a["accepted"], a["demoted"], a["duplicates"]) == (4, 1, 1)
    assert {name: a[f"refused_{name}"] for name in REFUSALS} == {
        "ip_rate": 0,
        "tenant_rate": 0,
        "hourly_budget": 2,
        "backpressure": 0,
    }
    b = receipt_totals(api, key_b)
    assert (b["accepted"], b["demoted"], b["duplicates"]) == (1, 0, 0)
    assert {name: b[f"refused_{name}"] for name in REFUSALS} == {
        "ip_rate": 0,
        "tenant_rate": 3,
        "hourly_budget": 0,
        "backpressure": 0,
    }
    # The default range: the last 24 hours, one row per hour, the current one last.
    now = datetime.now(tz=UTC)
    hours = [datetime.fromisoformat(hour["hour"].replace("Z", "+00:00")) for hour in a["hours"]]
    assert len(hours) in (24, 25)
    assert hours == sorted(hours) and hours[-1] == now.replace(minute=0, second=0, microsecond=0)

    # A's leads reach the CRM: the receipt says so, with the time they took.
    synced = wait_until(
        lambda: (totals := receipt_totals(api, key_a))["synced"] == 4 and totals,
        timeout=60,
        interval=0.5,
        message="tenant A's 4 leads not synced",
    )
    hour = next(hour for hour in synced["hours"] if hour["synced"])
    assert 0 < hour["synced_p50_seconds"] <= hour["synced_p99_seconds"] < 60
    assert receipt_totals(api, key_b)["synced"] <= 1  # B's one lead, never A's


def test_a_range_gives_its_hours_only(api, make_tenant):
    _, key = make_tenant("receipt-range")
    assert api.post("/api/v1/leads", json=a_lead(), headers=auth(key)).status_code == 202
    now = datetime.now(tz=UTC)
    earlier = receipt_totals(
        api, key, **{"from": (now - timedelta(hours=5)).isoformat(), "to": now.isoformat()}
    )
    assert len(earlier["hours"]) in (5, 6) and earlier["accepted"] == 1
    before = receipt_totals(
        api,
        key,
        **{
            "from": "2026-01-01T00:00:00Z",
            "to": "2026-01-01T03:00:00",  # no offset: UTC
        },
    )
    assert [hour["hour"] for hour in before["hours"]] == [
        "2026-01-01T00:00:00Z",
        "2026-01-01T01:00:00Z",
        "2026-01-01T02:00:00Z",
    ]
    assert before["accepted"] == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-13-01T00:00:00Z"}, "to"),
        ({"from": "2026-12-01T10:00:00Z", "to": "2026-12-01T09:00:00Z"}, "from"),
        ({"from": "2026-10-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}, "to"),
        ({"from": "0001-01-01T00:00:00Z", "to": "0001-01-01T01:00:00Z"}, "from"),
    ],
)
def test_a_bad_range_is_400_naming_the_field(api, make_tenant, params, field):
    _, key = make_tenant("receipt-bad")
    answer = api.get("/api/v1/usage", params=params, headers=auth(key))
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == "invalid" and "ISO 8601" in body["detail"]
    assert list(body["fields"]) == [field]


def test_the_receipt_needs_a_key(api):
    answer = api.get("/api/v1/usage")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["error"] == "not_authenticated"
