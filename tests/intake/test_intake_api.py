"""The intake API over HTTP against the live gunicorn: auth, bad input, dedup, answers."""

import json
import time
import uuid
from datetime import datetime, timedelta

import pytest

from apps.tenants.models import ApiKey
from apps.tenants.services import api_key_revoke
from tests.live.api import auth

pytestmark = pytest.mark.django_db(transaction=True)


def a_lead(**overrides) -> dict:
    lead = {
        "email": f"ada-{uuid.uuid4().hex[:8]}@example.com",
        "name": "Ada Lovelace",
        "phone": "+44 20 7946 0958",
        "company": "Analytical Engines",
        "source": "google_ads",
        "region": "gb",
    }
    return {**lead, **overrides}


def test_missing_key_is_401(api):
    response = api.post("/api/v1/leads", json=a_lead())
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_key_is_401(api):
    response = api.post("/api/v1/leads", json=a_lead(), headers=auth("lf_not-a-key"))
    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_revoked_key_is_401_within_seconds(api, make_tenant):
    tenant, key = make_tenant()
    assert api.post("/api/v1/leads", json=a_lead(), headers=auth(key)).status_code == 202
    api_key_revoke(ApiKey.objects.get(tenant=tenant))
    deadline = time.monotonic() + 2.0
    status = None
    while time.monotonic() < deadline:
        status = api.post("/api/v1/leads", json=a_lead(), headers=auth(key)).status_code
        if status == 401:
            break
        time.sleep(0.05)
    assert status == 401


def test_accepted_lead_answers_202_with_trace_id_tier_position_and_eta(api, make_tenant):
    _, key = make_tenant()
    response = api.post("/api/v1/leads", json=a_lead(priority="critical"), headers=auth(key))
    assert response.status_code == 202
    body = response.json()
    assert uuid.UUID(body["trace_id"])
    assert body["status"] == "queued"
    assert body["tier"] == "critical"
    assert body["position"] >= 1
    assert "T" in body["estimated_completion"]
    assert response.headers["X-LeadFlow-Mode"] == "normal"


def test_malformed_json_is_400(api, make_tenant):
    _, key = make_tenant()
    response = api.post(
        "/api/v1/leads",
        content=b'{"email": "a@b.com",',
        headers={**auth(key), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"


def test_invalid_fields_are_400_naming_each_field_and_reason(api, make_tenant):
    _, key = make_tenant()
    lead = {"email": "not-an-email", "priority": "urgent", "emial": "x", "name": "n" * 300}
    response = api.post("/api/v1/leads", json=lead, headers=auth(key))
    assert response.status_code == 400
    fields = response.json()["fields"]
    assert set(fields) == {"email", "priority", "emial", "name"}
    assert "valid email" in fields["email"][0]
    assert "urgent" in fields["priority"][0]
    assert fields["emial"] == ["unknown field"]


def test_missing_email_is_400(api, make_tenant):
    _, key = make_tenant()
    response = api.post("/api/v1/leads", json={"name": "No Email"}, headers=auth(key))
    assert response.status_code == 400
    assert response.json()["fields"]["email"] == ["This field is required."]


@pytest.mark.parametrize("body", [b"[]", b'"a string"', b"42", b"null", b""])
def test_a_body_that_is_not_an_object_is_400(api, make_tenant, body):
    _, key = make_tenant()
    headers = {**auth(key), "Content-Type": "application/json"}
    response = api.post("/api/v1/leads", content=body, headers=headers)
    assert response.status_code == 400


def test_payload_over_16_kb_is_400_on_payload(api, make_tenant):
    _, key = make_tenant()
    lead = a_lead(payload={"notes": "x" * (16 * 1024)})
    response = api.post("/api/v1/leads", json=lead, headers=auth(key))
    assert response.status_code == 400
    assert "limit is 16384 bytes" in response.json()["fields"]["payload"][0]


def test_payload_that_is_not_an_object_is_400(api, make_tenant):
    _, key = make_tenant()
    response = api.post("/api/v1/leads", json=a_lead(payload=[1, 2]), headers=auth(key))
    assert response.status_code == 400
    assert response.json()["fields"]["payload"] == ["must be a JSON object"]


def test_body_over_the_limit_is_413(api, make_tenant):
    _, key = make_tenant()
    body = json.dumps(a_lead(name="x" * 70_000)).encode()
    response = api.post(
        "/api/v1/leads", content=body, headers={**auth(key), "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_content_type_other_than_json_is_415(api, make_tenant, content_type):
    _, key = make_tenant()
    headers = auth(key)
    if content_type:
        headers["Content-Type"] = content_type
    response = api.post("/api/v1/leads", content=json.dumps(a_lead()).encode(), headers=headers)
    assert response.status_code == 415


def test_batch_over_500_is_400(api, make_tenant):
    _, key = make_tenant()
    leads = [a_lead() for _ in range(501)]
    response = api.post("/api/v1/leads/batch", json={"leads": leads}, headers=auth(key))
    assert response.status_code == 400
    assert response.json()["error"] == "batch_too_large"


@pytest.mark.parametrize("body", [{"leads": []}, {"leads": "x"}, {}, [a_lead()]])
def test_batch_without_a_list_of_leads_is_400(api, make_tenant, body):
    _, key = make_tenant()
    response = api.post("/api/v1/leads/batch", json=body, headers=auth(key))
    assert response.status_code == 400


def test_batch_answers_per_lead_in_order(api, make_tenant):
    _, key = make_tenant()
    leads = [a_lead(), {"email": "bad"}, a_lead(priority="low")]
    response = api.post("/api/v1/leads/batch", json={"leads": leads}, headers=auth(key))
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["invalid"]) == (2, 0, 1)
    results = body["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert results[0]["status"] == "queued" and results[0]["tier"] == "normal"
    assert "email" in results[1]["fields"]
    assert results[2]["status"] == "queued" and results[2]["tier"] == "low"


def test_a_batch_answer_naming_a_lone_surrogate_still_answers_its_accepted_lead(api, make_tenant):
    # The refused lead's field name is a lone surrogate, which orjson cannot write: the answer
    # is written by the standard library, with the accepted lead's estimated_completion too.
    _, key = make_tenant()
    body = json.dumps({"leads": [a_lead(), {**a_lead(), "\ud800": 1}]})  # sent as \ud800
    response = api.post(
        "/api/v1/leads/batch",
        content=body,
        headers={**auth(key), "Content-Type": "application/json"},
    )
    assert response.status_code == 202
    answer = response.json()
    assert (answer["accepted"], answer["invalid"]) == (1, 1)
    accepted, refused = answer["results"]
    assert datetime.fromisoformat(accepted["estimated_completion"]).utcoffset() == timedelta(0)
    assert refused["fields"] == {"\ud800": ["unknown field"]}


def test_idempotency_key_repeat_returns_the_original_answer(api, make_tenant):
    _, key = make_tenant()
    headers = {**auth(key), "Idempotency-Key": "order-123"}
    lead = a_lead()
    first = api.post("/api/v1/leads", json=lead, headers=headers)
    second = api.post("/api/v1/leads", json=lead, headers=headers)
    assert first.status_code == second.status_code == 202
    assert second.content == first.content
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    # Same key, another lead: refused, the key stands for one lead.
    other = api.post("/api/v1/leads", json=a_lead(), headers=headers)
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"


def test_duplicate_body_returns_original_trace_id(api, make_tenant):
    _, key = make_tenant()
    lead = a_lead()
    first = api.post("/api/v1/leads", json=lead, headers=auth(key))
    # The same lead with its keys in another order is the same canonical body.
    reordered = dict(reversed(list(lead.items())))
    second = api.post("/api/v1/leads", json=reordered, headers=auth(key))
    assert second.status_code == 200
    assert second.json()["trace_id"] == first.json()["trace_id"]
    assert second.json()["duplicate"] is True


def test_dedup_keys_are_not_shared_between_tenants(api, make_tenant):
    _, key_one = make_tenant()
    _, key_two = make_tenant()
    lead = a_lead()
    headers = {"Idempotency-Key": "same-key"}
    one = api.post("/api/v1/leads", json=lead, headers={**headers, **auth(key_one)})
    two = api.post("/api/v1/leads", json=lead, headers={**headers, **auth(key_two)})
    assert one.status_code == two.status_code == 202
    assert one.json()["trace_id"] != two.json()["trace_id"]


def test_batch_repeat_with_idempotency_key_replays_every_result(api, make_tenant):
    _, key = make_tenant()
    headers = {**auth(key), "Idempotency-Key": "batch-7"}
    leads = [a_lead(), a_lead()]
    first = api.post("/api/v1/leads/batch", json={"leads": leads}, headers=headers)
    second = api.post("/api/v1/leads/batch", json={"leads": leads}, headers=headers)
    assert second.status_code == 202
    assert second.headers["Idempotent-Replayed"] == "true"
    assert (second.json()["accepted"], second.json()["duplicates"]) == (2, 0)
    assert second.json()["results"] == [
        {**result, "replayed": True} for result in first.json()["results"]
    ]


def test_get_is_404_for_another_tenants_lead(api, make_tenant):
    _, key_one = make_tenant()
    _, key_two = make_tenant()
    trace_id = api.post("/api/v1/leads", json=a_lead(), headers=auth(key_one)).json()["trace_id"]
    assert api.get(f"/api/v1/leads/{trace_id}", headers=auth(key_one)).status_code == 200
    assert api.get(f"/api/v1/leads/{trace_id}", headers=auth(key_two)).status_code == 404


def test_get_unknown_or_malformed_trace_id_is_404(api, make_tenant):
    _, key = make_tenant()
    assert api.get(f"/api/v1/leads/{uuid.uuid4()}", headers=auth(key)).status_code == 404
    assert api.get("/api/v1/leads/not-a-uuid", headers=auth(key)).status_code == 404
