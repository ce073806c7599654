"""The hot path equals its described contract: the same requests, valid and invalid, give the
same status, headers and body through the live gunicorn (apps/intake/fast_post.py) and through the
DRF contract views (apps/intake/contract_views.py, run here by Django's test client).

Each side has its own tenant, configured alike, and its own client address, so dedup and the
limits start from the same state on both. What two admissions cannot share (trace ids,
positions, estimated completions, Retry-After seconds) is compared by shape; everything else
exactly.
"""

import random
import re
import uuid
from dataclasses import dataclass, field

import httpx
import pytest
from django.test import Client

from tests.hostile import PARSE_ERROR, batch_body, hostile_leads, nested_raw

pytestmark = pytest.mark.django_db(transaction=True)

JSON = "application/json"
LEAD = "/api/v1/leads"
BATCH = "/api/v1/leads/batch"
# The API's own headers; Django's and DRF's generic ones (Allow, X-Frame-Options...) are not.
COMPARED_HEADERS = (
    "content-type",
    "retry-after",
    "x-leadflow-mode",
    "www-authenticate",
    "idempotent-replayed",
    "x-request-id",
)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\+00:00")


def _positive_int(value) -> bool:
    return type(value) is int and value >= 1


# Fields whose values differ between two admissions: (shape check).
VOLATILE = {
    "trace_id": lambda value: isinstance(value, str) and bool(_UUID.fullmatch(value)),
    "position": _positive_int,
    "estimated_completion": lambda value: (
        isinstance(value, str) and bool(_ISO_UTC.fullmatch(value))
    ),
    "retry_after": _positive_int,
}


def assert_same(fast, contract, where: str = "body") -> None:
    """Equal, but for VOLATILE keys, which must have the same shape on both sides."""
    assert type(fast) is type(contract), f"{where}: {fast!r} != {contract!r}"
    if isinstance(fast, dict):
        assert list(fast) == list(contract), f"{where}: keys {list(fast)} != {list(contract)}"
        for key, value in fast.items():
            if key in VOLATILE:
                assert VOLATILE[key](value), f"{where}.{key}: {value!r}"
                assert VOLATILE[key](contract[key]), f"{where}.{key}: {contract[key]!r}"
            else:
                assert_same(value, contract[key], f"{where}.{key}")
    elif isinstance(fast, list):
        assert len(fast) == len(contract), f"{where}: {len(fast)} != {len(contract)} items"
        for index, (a, b) in enumerate(zip(fast, contract, strict=True)):
            assert_same(a, b, f"{where}[{index}]")
    else:
        assert fast == contract, f"{where}: {fast!r} != {contract!r}"


@dataclass
class Side:
    """One way into the API, as one client: a tenant's key and an address of its own."""

    key: str
    address: str = field(
        default_factory=lambda: f"10.{random.randrange(256)}.0.{random.randrange(1, 255)}"
    )
    tenant: object = None  # the Tenant row, for a test that changes its settings


@dataclass
class Sides:
    fast: Side
    contract: Side
    http: httpx.Client
    django: Client

    def post(
        self,
        path: str,
        body: bytes,
        content_type: str | None = JSON,
        auth="key",
        headers=None,
        raw: bool = False,
    ):
        """(fast answer, contract answer), each as (status, headers, JSON body); with `raw`,
        the body's bytes as sent."""
        return (
            self.fast_post(path, body, content_type, auth, headers or {}, raw),
            self.contract_post(path, body, content_type, auth, headers or {}, raw),
        )

    @staticmethod
    def _authorization(side: Side, auth) -> str | None:
        return f"Bearer {side.key}" if auth == "key" else auth

    def fast_post(self, path, body, content_type=JSON, auth="key", headers=None, raw=False):
        """The fast path's answer alone (the live gunicorn)."""
        headers = headers or {}
        sent = {"X-Forwarded-For": self.fast.address, **headers}
        if content_type is not None:
            sent["Content-Type"] = content_type
        if (authorization := self._authorization(self.fast, auth)) is not None:
            sent["Authorization"] = authorization
        response = self.http.post(path, content=body, headers=sent)
        content = response.content if raw else response.json()
        return response.status_code, _api_headers(response.headers), content

    def contract_post(self, path, body, content_type=JSON, auth="key", headers=None, raw=False):
        """The contract views' answer alone (Django's test client)."""
        headers = headers or {}
        environ = {"HTTP_X_FORWARDED_FOR": self.contract.address, "CONTENT_LENGTH": str(len(body))}
        environ["CONTENT_TYPE"] = content_type or ""
        for name, value in headers.items():
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            environ["HTTP_" + name.upper().replace("-", "_")] = text
        if (authorization := self._authorization(self.contract, auth)) is not None:
            environ["HTTP_AUTHORIZATION"] = authorization
        response = self.django.generic("POST", path, data=body, **environ)
        content = response.content if raw else response.json()
        return response.status_code, _api_headers(response.headers), content


def _api_headers(headers) -> dict:
    return {name: headers[name] for name in COMPARED_HEADERS if name in headers}


def assert_answers_equal(answers, status: int | None = None) -> tuple:
    (fast_status, fast_headers, fast_body), (status_c, headers_c, body_c) = answers
    assert fast_status == status_c, f"status {fast_status} != {status_c}: {fast_body} / {body_c}"
    if status is not None:
        assert fast_status == status, fast_body
    assert set(fast_headers) == set(headers_c), f"{fast_headers} != {headers_c}"
    for name, value in fast_headers.items():
        if name == "retry-after":
            assert int(value) >= 1 and int(headers_c[name]) >= 1
        elif name == "x-request-id":  # each request's own: made up the same way on both paths
            assert len(value) == len(headers_c[name]) == 16, (value, headers_c[name])
        else:
            assert value == headers_c[name], name
    assert_same(fast_body, body_c)
    return fast_status, fast_body


@pytest.fixture
def sides(live_stack, make_tenant, settings):
    """A tenant for each side; this process's settings are the live API's where they differ."""
    env = live_stack.env
    settings.TRUSTED_PROXIES = int(env["LEADFLOW_TRUSTED_PROXIES"])
    settings.ANONYMOUS_IP_BURST = int(env["LEADFLOW_ANONYMOUS_IP_BURST"])
    settings.ANONYMOUS_IP_RATE = float(env["LEADFLOW_ANONYMOUS_IP_RATE"])

    def make(**tenant_fields) -> Sides:
        fast_tenant, fast_key = make_tenant("fast", **tenant_fields)
        contract_tenant, contract_key = make_tenant("contract", **tenant_fields)
        return Sides(
            Side(fast_key, tenant=fast_tenant),
            Side(contract_key, tenant=contract_tenant),
            http,
            Client(),
        )

    with httpx.Client(base_url=live_stack.api_url, timeout=30.0) as http:
        yield make


def lead_json(**fields) -> bytes:
    import orjson

    return orjson.dumps({"email": f"diff-{uuid.uuid4().hex[:10]}@example.com", **fields})


HOSTILE = hostile_leads("differential")


@pytest.mark.parametrize("case", HOSTILE, ids=lambda case: case.test_id)
def test_every_hostile_lead_gets_the_contracts_answer(sides, case):
    pair = sides()
    status, body = assert_answers_equal(pair.post(LEAD, case.body))
    assert status == (202 if case.answer == "stored" else 400), body


def test_every_hostile_lead_in_one_batch_gets_the_contracts_answer(sides):
    pair = sides()
    leads = [case.body for case in HOSTILE if case.answer != PARSE_ERROR]
    assert_answers_equal(pair.post(BATCH, batch_body(leads)), 202)
    # The same batch again: every stored lead a duplicate, every invalid one invalid again.
    assert_answers_equal(pair.post(BATCH, batch_body(leads)), 200)


def test_a_lead_then_its_repeat_and_an_idempotency_key(sides):
    pair = sides()
    full = lead_json(
        name="Ada",
        phone="+44 20 7946 0958",
        company="AE",
        source="ads",
        campaign_id="c1",
        region="gb",
        priority="low",
        payload={"k": [1, 2.5, None, True, {"x": "y"}]},
    )
    assert_answers_equal(pair.post(LEAD, full), 202)
    assert_answers_equal(pair.post(LEAD, full), 200)
    key = {"Idempotency-Key": "order-42 / retry"}
    keyed = lead_json()
    assert_answers_equal(pair.post(LEAD, keyed, headers=key), 202)
    assert_answers_equal(pair.post(LEAD, keyed, headers=key), 202)  # the original, replayed
    assert_answers_equal(pair.post(LEAD, lead_json(name="other"), headers=key), 422)
    batch = batch_body([lead_json(), lead_json()])
    assert_answers_equal(pair.post(BATCH, batch, headers=key), 202)
    assert_answers_equal(pair.post(BATCH, batch, headers=key), 202)  # every result replayed
    # Another batch with the key: other leads, admitted (the key and each lead are its key).
    assert_answers_equal(pair.post(BATCH, batch_body([lead_json(), lead_json()]), headers=key), 202)


@pytest.mark.parametrize(
    "value",
    ["k" * 256, "k" * 4000, b"caf\xe9", "tab\there"],
    ids=["256-chars", "4000-chars", "latin-1", "control-char"],
)
@pytest.mark.parametrize("path", [LEAD, BATCH])
def test_a_bad_idempotency_key_gets_the_contracts_answer(sides, path, value):
    pair = sides()
    body = lead_json() if path == LEAD else batch_body([lead_json()])
    assert_answers_equal(pair.post(path, body, headers={"Idempotency-Key": value}), 400)


REQUEST_ERRORS = [
    # (id, path, body, content type)
    ("empty-body", LEAD, b"", JSON),
    ("truncated", LEAD, b'{"email": "a@b.co"', JSON),
    ("not-utf8-outside-strings", LEAD, b'{"email": "a@b.co"}\xff', JSON),
    ("null", LEAD, b"null", JSON),
    ("number", LEAD, b"1", JSON),
    ("array", LEAD, b"[]", JSON),
    (
        "priority-nested-1000",
        LEAD,
        lead_json()[:-1] + b',"priority":' + b"[" * 1000 + b"]" * 1000 + b"}",
        JSON,
    ),
    ("priority-object", LEAD, lead_json(priority={"tier": "critical"}), JSON),
    ("priority-list-of-infinity", LEAD, lead_json()[:-1] + b',"priority":[1e400]}', JSON),
    (
        "name-nested-1000",
        LEAD,
        lead_json()[:-1] + b',"name":' + b"[" * 1000 + b"]" * 1000 + b"}",
        JSON,
    ),
    (
        "payload-past-any-parser",
        LEAD,
        lead_json()[:-1] + b',"payload":' + nested_raw(1100) + b"}",
        JSON,
    ),
    ("lead-too-large", LEAD, lead_json(name="x" * 70_000), JSON),
    ("text-plain", LEAD, lead_json(), "text/plain"),
    ("no-content-type", LEAD, lead_json(), None),
    ("wildcard", LEAD, lead_json(), "*/*"),
    ("application-wildcard", LEAD, lead_json(), "application/*"),
    ("problem-json", LEAD, lead_json(), "application/problem+json"),
    ("form", LEAD, b"email=a@b.co", "application/x-www-form-urlencoded"),
    ("charset", LEAD, lead_json(), "application/json; charset=utf-8"),
    ("upper-case", LEAD, lead_json(), "APPLICATION/JSON"),
    ("batch-empty-body", BATCH, b"", JSON),
    ("batch-no-leads", BATCH, b"{}", JSON),
    ("batch-leads-null", BATCH, b'{"leads": null}', JSON),
    ("batch-leads-empty", BATCH, b'{"leads": []}', JSON),
    ("batch-leads-object", BATCH, b'{"leads": {"email": "a@b.co"}}', JSON),
    ("batch-leads-string", BATCH, b'{"leads": "a@b.co"}', JSON),
    ("batch-body-array", BATCH, b"[" + lead_json() + b"]", JSON),
    ("batch-body-null", BATCH, b"null", JSON),
    ("batch-501", BATCH, batch_body([b"{}"] * 501), JSON),
    ("batch-all-invalid", BATCH, batch_body([b"{}", b"null", b"[]", b'{"email": 1}']), JSON),
    ("batch-extra-keys", BATCH, b'{"leads": [' + lead_json() + b'], "note": 1}', JSON),
    ("batch-too-large", BATCH, batch_body([lead_json(name="x" * 199)] * 20_000), JSON),
    ("batch-text-plain", BATCH, batch_body([lead_json()]), "text/plain"),
]


@pytest.mark.parametrize(
    ("path", "body", "content_type"),
    [case[1:] for case in REQUEST_ERRORS],
    ids=[case[0] for case in REQUEST_ERRORS],
)
def test_each_request_gets_the_contracts_answer(sides, path, body, content_type):
    pair = sides()
    assert_answers_equal(pair.post(path, body, content_type))


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic YTpi", "Bearer", "Bearer lf_not-a-key", "bearer KEY", "Token KEY", "KEY"],
)
@pytest.mark.parametrize("path", [LEAD, BATCH])
def test_each_authorization_gets_the_contracts_answer(sides, path, authorization):
    pair = sides()
    body = lead_json() if path == LEAD else batch_body([lead_json()])
    fast_auth = authorization and authorization.replace("KEY", pair.fast.key)
    contract_auth = authorization and authorization.replace("KEY", pair.contract.key)
    fast = pair.fast_post(path, body, JSON, fast_auth)
    contract = pair.contract_post(path, body, JSON, contract_auth)
    assert_answers_equal((fast, contract))


def test_requests_without_a_key_past_the_address_burst_get_the_contracts_429(sides, live_stack):
    pair = sides()
    burst = int(live_stack.env["LEADFLOW_ANONYMOUS_IP_BURST"])
    statuses = [
        assert_answers_equal(pair.post(LEAD, lead_json(), auth=None))[0] for _ in range(burst + 1)
    ]
    assert statuses == [401] * burst + [429]


def test_the_tenant_rate_limit_gets_the_contracts_429(sides):
    pair = sides(rate_limit_per_second=1)
    assert_answers_equal(pair.post(LEAD, lead_json()), 202)
    assert_answers_equal(pair.post(LEAD, lead_json()), 429)
    assert_answers_equal(pair.post(BATCH, batch_body([lead_json()])), 429)


def test_the_hourly_budget_refuses_leads_as_the_contract_does(sides):
    pair = sides(hourly_budget=2)
    batch = batch_body([lead_json(), lead_json(), lead_json(), b'{"email": "x"}'])
    status, body = assert_answers_equal(pair.post(BATCH, batch), 202)
    assert [r.get("limit") for r in body["results"]] == [None, None, "hourly_budget", None]
    assert_answers_equal(pair.post(BATCH, batch_body([lead_json(), lead_json()])), 429)
    assert_answers_equal(pair.post(LEAD, lead_json()), 429)


def test_a_critical_lead_past_the_credits_is_demoted_as_the_contract_says(sides):
    pair = sides(critical_capacity=1, critical_refill_per_second=0.001)
    assert_answers_equal(pair.post(LEAD, lead_json(priority="critical")), 202)
    status, body = assert_answers_equal(pair.post(LEAD, lead_json(priority="critical")), 202)
    assert body["tier"] == "normal" and body["demoted"] is True


def test_the_accept_header_changes_nothing(sides):
    pair = sides()
    answers = pair.post(LEAD, lead_json(), headers={"Accept": "text/html"})
    assert_answers_equal(answers, 202)
