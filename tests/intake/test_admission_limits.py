"""Admission control over HTTP, against the live API: each limit at its boundary and after it
refills, critical credits and demotion, and the Retry-After a client is told."""

import time
import uuid

import pytest

from tests.live.api import auth

pytestmark = pytest.mark.django_db(transaction=True)


def a_lead(priority: str = "normal") -> dict:
    return {"email": f"{uuid.uuid4().hex[:12]}@example.com", "priority": priority}


def post(api, key: str, priority: str = "normal", **headers):
    return api.post("/api/v1/leads", json=a_lead(priority), headers={**auth(key), **headers})


def assert_rate_limited(response, limit: str) -> dict:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "rate_limited" and body["limit"] == limit, body
    assert int(response.headers["Retry-After"]) == body["retry_after"] >= 1
    assert response.headers["X-LeadFlow-Mode"]
    return body


def test_tenant_rate_limit_passes_the_nth_request_and_refuses_the_next(api, make_tenant):
    _, key = make_tenant(rate_limit_per_second=5)
    started = time.monotonic()
    answers = [post(api, key) for _ in range(6)]
    elapsed = time.monotonic() - started
    assert [a.status_code for a in answers[:5]] == [202] * 5
    assert elapsed < 1.0, f"the 6 requests took {elapsed:.2f} s, longer than the window"
    body = assert_rate_limited(answers[5], "tenant_rate")
    assert body["retry_after"] == 1  # the window frees a slot within the second

    time.sleep(1.05)
    assert post(api, key).status_code == 202


def test_a_refused_request_does_not_use_a_slot_of_the_window(api, make_tenant):
    _, key = make_tenant(rate_limit_per_second=2)
    assert [post(api, key).status_code for _ in range(2)] == [202, 202]
    assert [post(api, key).status_code for _ in range(5)] == [429] * 5
    time.sleep(1.05)
    assert [post(api, key).status_code for _ in range(2)] == [202, 202]


def test_requests_without_a_valid_key_are_limited_per_ip(api):
    # The live stack allows a burst of 5 such requests per address, then 1/s.
    assert [api.post("/api/v1/leads", json=a_lead()).status_code for _ in range(5)] == [401] * 5
    refused = api.post("/api/v1/leads", json=a_lead())
    assert refused.status_code == 429 and refused.json()["limit"] == "ip_rate"
    assert refused.headers["Retry-After"] == "1"
    # Another address is not affected.
    other = api.post("/api/v1/leads", json=a_lead(), headers={"X-Forwarded-For": "192.0.2.77"})
    assert other.status_code == 401

    time.sleep(1.05)
    assert api.post("/api/v1/leads", json=a_lead()).status_code == 401


def test_a_tenants_per_ip_limit_refuses_one_address_not_the_others(api, make_tenant):
    _, key = make_tenant(per_ip_rate_limit_per_second=3)
    first_ip = {"X-Forwarded-For": "198.51.100.1"}
    assert [post(api, key, **first_ip).status_code for _ in range(3)] == [202] * 3
    assert_rate_limited(post(api, key, **first_ip), "ip_rate")
    assert post(api, key, **{"X-Forwarded-For": "198.51.100.2"}).status_code == 202

    time.sleep(0.4)  # 3/s: one request's worth refills in a third of a second
    assert post(api, key, **first_ip).status_code == 202


def test_hourly_budget_refuses_leads_beyond_it_until_the_hour_ends(api, make_tenant):
    _, key = make_tenant(hourly_budget=3)
    leads = [a_lead() for _ in range(5)]
    batch = api.post("/api/v1/leads/batch", json={"leads": leads}, headers=auth(key))
    assert batch.status_code == 202
    body = batch.json()
    assert (body["accepted"], body["refused"], body["invalid"]) == (3, 2, 0)
    refused = body["results"][3:]
    assert all(r["limit"] == "hourly_budget" for r in refused)
    seconds_to_hour_end = 3600 - time.time() % 3600
    for result in refused:
        assert abs(result["retry_after"] - seconds_to_hour_end) <= 3

    single = assert_rate_limited(post(api, key), "hourly_budget")
    assert abs(single["retry_after"] - seconds_to_hour_end) <= 3
    # A client retrying an accepted lead still gets its original answer.
    repeat = api.post("/api/v1/leads", json=leads[0], headers=auth(key))
    assert repeat.status_code == 200 and repeat.json()["duplicate"] is True


def test_a_batch_refused_whole_is_429_with_the_shortest_retry_after(api, make_tenant):
    _, key = make_tenant(hourly_budget=1)
    assert post(api, key).status_code == 202
    response = api.post(
        "/api/v1/leads/batch", json={"leads": [a_lead(), a_lead()]}, headers=auth(key)
    )
    assert response.status_code == 429
    assert response.json()["refused"] == 2
    assert int(response.headers["Retry-After"]) == min(
        r["retry_after"] for r in response.json()["results"]
    )


def test_critical_leads_without_credit_are_demoted_then_credits_refill(api, make_tenant):
    _, key = make_tenant(critical_capacity=3, critical_refill_per_second=1.0)
    answers = [post(api, key, "critical").json() for _ in range(4)]
    assert [(a["tier"], a["demoted"]) for a in answers] == [("critical", False)] * 3 + [
        ("normal", True)
    ]
    # Normal and low leads never take a credit.
    assert post(api, key, "low").json()["tier"] == "low"

    time.sleep(1.1)
    recovered = post(api, key, "critical").json()
    assert (recovered["tier"], recovered["demoted"]) == ("critical", False)
    assert post(api, key, "critical").json()["demoted"] is True


def test_a_batch_spends_critical_credits_in_order_and_demotes_the_rest(api, make_tenant):
    _, key = make_tenant(critical_capacity=3, critical_refill_per_second=0)
    leads = [a_lead("critical") for _ in range(5)]
    body = api.post("/api/v1/leads/batch", json={"leads": leads}, headers=auth(key)).json()
    assert [(r["tier"], r["demoted"]) for r in body["results"]] == [("critical", False)] * 3 + [
        ("normal", True)
    ] * 2
    assert post(api, key, "critical").json()["demoted"] is True  # none left, none refilled


def test_the_same_lead_twice_in_one_batch_is_accepted_once(api, make_tenant):
    _, key = make_tenant()
    lead = a_lead()
    body = api.post("/api/v1/leads/batch", json={"leads": [lead, lead]}, headers=auth(key)).json()
    first, second = body["results"]
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert second["duplicate"] is True and second["trace_id"] == first["trace_id"]
