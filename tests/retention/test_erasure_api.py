"""DELETE /api/v1/leads?email=… over HTTP against the live stack (gunicorn, the pools, control):
a lead sent through the API, processed to the end, is erased everywhere; the other tenant's
lead with the same address stays; a repeat is 200 with zeros; no key is 401, no or a bad
address 400, in the API's error shape."""

import uuid

import pytest

from apps.leads.models import Lead
from apps.retention.models import Erasure
from tests.live.api import auth, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _sent_and_stored(api, key: str, email: str, headers: dict | None = None) -> str:
    """POST a lead and wait until the pipeline is done with it; its trace id."""
    response = api.post(
        "/api/v1/leads",
        json={"email": email, "name": "Ada"},
        headers={**auth(key), **(headers or {})},
    )
    assert response.status_code == 202, response.text
    trace_id = response.json()["trace_id"]
    wait_until(
        lambda: (
            api.get(f"/api/v1/leads/{trace_id}", headers=auth(key)).json()["status"]
            in ("synced", "dead_lettered", "failed")
        ),
        timeout=60,
        interval=0.2,
        message=f"lead {trace_id} not processed: {Lead.objects.filter(pk=trace_id).values()}",
    )
    return trace_id


def test_a_tenant_erases_a_persons_leads_and_only_its_own(api, make_tenant):
    (tenant, key), (_, other_key) = make_tenant("erase"), make_tenant("erase-other")
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    mine = _sent_and_stored(api, key, email)
    theirs = _sent_and_stored(api, other_key, email)

    answer = api.delete("/api/v1/leads", params={"email": f" {email.upper()} "}, headers=auth(key))

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["leads"] == 1
    assert body["redis_keys"] >= 2  # its trace key and its dedup key at least
    assert len(body["email_sha256"]) == 64 and email not in answer.text
    assert api.get(f"/api/v1/leads/{mine}", headers=auth(key)).status_code == 404
    assert not Lead.objects.filter(pk=mine).exists()
    kept = api.get(f"/api/v1/leads/{theirs}", headers=auth(other_key))
    assert kept.status_code == 200 and kept.json()["status"] != "queued"
    assert Lead.objects.get(pk=theirs).email == email

    again = api.delete("/api/v1/leads", params={"email": email}, headers=auth(key))
    assert again.status_code == 200
    assert {name: n for name, n in again.json().items() if name != "email_sha256"} == {
        "leads": 0,
        "enrichments": 0,
        "crm_syncs": 0,
        "dead_letters": 0,
        "deferred_work": 0,
        "redis_keys": 0,
    }
    audit = Erasure.objects.filter(tenant=tenant).order_by("id")
    assert [row.leads for row in audit] == [1, 0]
    assert {row.email_sha256 for row in audit} == {body["email_sha256"]}
    # Its dedup key went with it: the same lead sent again is a new lead, not a duplicate.
    resent = api.post("/api/v1/leads", json={"email": email, "name": "Ada"}, headers=auth(key))
    assert resent.status_code == 202 and resent.json()["trace_id"] != mine


def test_erasure_forgets_the_answer_kept_for_an_idempotency_key(api, make_tenant):
    """A lead sent with an Idempotency-Key keeps its answer in its dedup key (admit.lua) to
    replay it: erased with the lead, so a retry after the erasure is a new lead."""
    _, key = make_tenant("erase-keyed")
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    idempotency = {"Idempotency-Key": f"signup-{email}"}
    erased = _sent_and_stored(api, key, email, idempotency)

    answer = api.delete("/api/v1/leads", params={"email": email}, headers=auth(key))
    assert answer.status_code == 200 and answer.json()["leads"] == 1, answer.text

    resent = api.post(
        "/api/v1/leads", json={"email": email, "name": "Ada"}, headers={**auth(key), **idempotency}
    )
    assert resent.status_code == 202, resent.text
    assert resent.json()["trace_id"] != erased
    assert "Idempotent-Replayed" not in resent.headers


def test_erasure_needs_a_key(api):
    answer = api.delete("/api/v1/leads", params={"email": "ada@example.com"})
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert answer.json()["error"] == "not_authenticated"


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "This field is required."),
        ({"email": ""}, "This field may not be blank."),
        ({"email": "not-an-address"}, "Enter a valid email address."),
        ({"email": "ada\x00@example.com"}, "Null characters are not allowed."),
        ({"email": "a" * 250 + "@example.com"}, "Ensure this field has no more than 254"),
    ],
)
def test_no_or_a_bad_address_is_a_400_naming_the_field(api, make_tenant, params, reason):
    _, key = make_tenant("erase-bad")
    answer = api.delete("/api/v1/leads", params=params, headers=auth(key))
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["error"] == "invalid"
    assert body["fields"]["email"][0].startswith(reason)
