"""Every answer of the live API carries X-Request-Id — the intake's fast path (POSTs) and Django's
views (the lead's GET, the probes, unknown paths) alike, errors and limits included — echoing a
sane id the caller sent and making one up otherwise; the API's log lines carry it."""

import json
import re
import uuid

import httpx
import pytest

from tests.live.api import auth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

MADE_UP = re.compile(r"[0-9a-f]{16}")


def lead() -> dict:
    return {"email": f"rid-{uuid.uuid4().hex[:10]}@gmail.com"}


def made_up(response: httpx.Response) -> str:
    request_id = response.headers.get("X-Request-Id", "")
    assert MADE_UP.fullmatch(request_id), (response.status_code, dict(response.headers))
    return request_id


def test_every_answer_carries_a_request_id_of_its_own(api, make_tenant):
    _, key = make_tenant("rid")
    answers = {
        "fast 202": api.post("/api/v1/leads", json=lead(), headers=auth(key)),
        "fast batch 202": api.post(
            "/api/v1/leads/batch", json={"leads": [lead()]}, headers=auth(key)
        ),
        "fast 400": api.post("/api/v1/leads", content=b"{", headers=auth(key) | _json()),
        "fast 415": api.post("/api/v1/leads", content=b"x", headers=auth(key)),
        "fast 401": api.post("/api/v1/leads", json=lead()),
        "drf 200": None,
        "drf 401": api.get(f"/api/v1/leads/{uuid.uuid4()}"),
        "drf 404": api.get(f"/api/v1/leads/{uuid.uuid4()}", headers=auth(key)),
        "django 404": api.get("/no/such/page"),
        "probe 200": api.get("/healthz"),
    }
    trace_id = answers["fast 202"].json()["trace_id"]
    answers["drf 200"] = api.get(f"/api/v1/leads/{trace_id}", headers=auth(key))
    expected = {"drf 200": 200, "django 404": 404, "probe 200": 200}
    ids = set()
    for name, response in answers.items():
        status = expected.get(name, int(name.split()[-1]))
        assert response.status_code == status, (name, response.text)
        ids.add(made_up(response))
    assert len(ids) == len(answers)  # one per request


def test_limits_answer_with_a_request_id_on_both_paths(live_stack, make_tenant):
    """Requests without a valid key: a burst of 5 per address, then 429 (the live stack's
    settings), on the fast path's POSTs and DRF's GET alike."""

    def burst(send) -> httpx.Response:
        for _ in range(20):
            response = send()
            if response.status_code == 429:
                return response
        raise AssertionError("no 429 after 20 requests without a key")

    for send_from in ("post", "get"):
        address = f"10.99.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
        with httpx.Client(
            base_url=live_stack.api_url, headers={"X-Forwarded-For": address}
        ) as client:
            if send_from == "post":
                limited = burst(lambda: client.post("/api/v1/leads", json=lead()))  # noqa: B023
            else:
                limited = burst(lambda: client.get(f"/api/v1/leads/{uuid.uuid4()}"))  # noqa: B023
        assert limited.json()["limit"] == "ip_rate"
        made_up(limited)


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [("client-req.42_A", True), ("x" * 64, True), ("x" * 65, False), ("semi;colon", False)],
)
def test_a_sane_request_id_is_echoed_and_any_other_replaced(api, make_tenant, sent, echoed):
    _, key = make_tenant("rid-echo")
    headers = {"X-Request-Id": sent}
    posted = api.post("/api/v1/leads", json=lead(), headers=auth(key) | headers)
    got = api.get(f"/api/v1/leads/{posted.json()['trace_id']}", headers=auth(key) | headers)
    refused = api.post("/api/v1/leads", json=lead(), headers=headers)  # 401 on the fast path
    for response in (posted, got, refused):
        if echoed:
            assert response.headers["X-Request-Id"] == sent
        else:
            assert made_up(response) != sent


def test_the_api_logs_a_request_under_its_id(live_stack, api):
    """Django logs a 4xx answer ("Not Found: …") after every middleware returned: still under
    the request's id."""
    request_id = f"log-{uuid.uuid4().hex[:12]}"
    response = api.get("/no/such/page", headers={"X-Request-Id": request_id})
    assert response.status_code == 404

    def logged() -> list[dict]:
        lines = []
        for line in live_stack.processes["api"].log().splitlines():
            if request_id in line and line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    [line] = wait_until(logged, timeout=10, message="no API log line for the request")
    assert line["request_id"] == request_id
    assert "/no/such/page" in line["event"]


def _json() -> dict:
    return {"Content-Type": "application/json"}
