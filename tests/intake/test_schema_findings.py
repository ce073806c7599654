"""What describing the API found, kept as plain tests against the live API.

- A priority nested 1,000 deep (orjson reads up to 1,024 levels) was a 500: the error message
  echoed str(priority), which recursed past Python's limit. Found by holding the hot path to
  its DRF contract; a list or object priority is now named, not echoed.

schemathesis itself (tests/intake/test_schema_fuzz.py: about 1,000 cases a run; 4,826 with
LEADFLOW_FUZZ_EXAMPLES=1500 LEADFLOW_FUZZ_SEED=7) found no 5xx and no answer outside the schema.
"""

import pytest

from tests.hostile import batch_body
from tests.live.api import auth

pytestmark = pytest.mark.django_db(transaction=True)

JSON = {"Content-Type": "application/json"}
NESTED_PRIORITY = b'{"email":"a@b.co","priority":' + b"[" * 1000 + b"]" * 1000 + b"}"


def test_a_priority_nested_1000_deep_is_a_400_naming_it(api, make_tenant):
    _, key = make_tenant()
    response = api.post("/api/v1/leads", content=NESTED_PRIORITY, headers={**auth(key), **JSON})
    assert response.status_code == 400, response.text
    assert response.json()["fields"] == {"priority": ["a JSON array is not a valid choice."]}


def test_a_priority_nested_1000_deep_in_a_batch_refuses_that_lead_only(api, make_tenant):
    _, key = make_tenant()
    body = batch_body([NESTED_PRIORITY, b'{"email":"ok-nested@example.com"}'])
    response = api.post("/api/v1/leads/batch", content=body, headers={**auth(key), **JSON})
    assert response.status_code == 202, response.text
    first, second = response.json()["results"]
    assert first["fields"] == {"priority": ["a JSON array is not a valid choice."]}
    assert second["status"] == "queued"
