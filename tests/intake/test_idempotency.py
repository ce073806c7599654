"""Idempotency as Stripe's (README, Idempotency), through both ways in: the live gunicorn's fast
path and the DRF contract views (tests/intake/test_contract_differential.py's `sides`), each
answer checked on each side, and the two sides' answers held equal.

- One lead, same key and lead: the original status and body, byte for byte, marked
  `Idempotent-Replayed: true`; same key, another lead: 422 and nothing admitted.
- A batch: each lead's key is the batch's key and the lead itself, so a retry that drops,
  adds or reorders leads changes no other lead's fate, and no batch collides with a single
  lead's key.
"""

import time

import orjson
import pytest

from leadflow import redis_keys
from leadflow.redis_conn import get_inbox_redis
from tests.hostile import batch_body
from tests.intake import test_contract_differential as differential
from tests.intake.test_contract_differential import BATCH, LEAD, assert_answers_equal, lead_json

pytestmark = pytest.mark.django_db(transaction=True)

sides = differential.sides  # the fixture: a tenant for each side, configured alike

REPLAYED = "idempotent-replayed"


def key(value: str) -> dict:
    return {"Idempotency-Key": value}


def accepted_this_hour(side) -> int:
    """The tenant's leads accepted in this clock hour (admit.lua's budget counter)."""
    used = get_inbox_redis().hget(redis_keys.budget_key(side.tenant.id), "used")
    return int(used or 0)


def same_headers(headers: dict) -> dict:
    """An answer's headers but X-Request-Id, which is each request's own."""
    return {name: value for name, value in headers.items() if name != "x-request-id"}


def same_answer(answer: tuple) -> tuple:
    status, headers, content = answer
    return status, same_headers(headers), content


def test_the_same_key_and_lead_again_is_the_original_answer_byte_for_byte(sides):
    pair = sides()
    lead = {"email": "ada-replay@example.com", "name": "Ada", "priority": "critical"}
    body = orjson.dumps(lead)
    first = pair.post(LEAD, body, headers=key("order-1"), raw=True)
    again = pair.post(LEAD, body, headers=key("order-1"), raw=True)
    # The same lead, its keys in another order: the same canonical JSON, the same lead.
    reordered = pair.post(
        LEAD, orjson.dumps(dict(reversed(lead.items()))), headers=key("order-1"), raw=True
    )
    for side in (0, 1):
        (status, headers, content) = first[side]
        assert status == 202 and REPLAYED not in headers, content
        for retry in (again[side], reordered[side]):
            assert same_answer(retry) == (202, {**same_headers(headers), REPLAYED: "true"}, content)
    for answers in (first, again):
        assert_answers_equal([(s, h, orjson.loads(c)) for s, h, c in answers], 202)


def test_the_same_key_with_another_lead_is_422_and_admits_nothing(sides):
    pair = sides()
    assert_answers_equal(pair.post(LEAD, lead_json(), headers=key("order-2")), 202)
    before = [accepted_this_hour(pair.fast), accepted_this_hour(pair.contract)]

    other = lead_json()
    status, body = assert_answers_equal(pair.post(LEAD, other, headers=key("order-2")), 422)
    assert body["error"] == "idempotency_key_reused", body
    assert [accepted_this_hour(pair.fast), accepted_this_hour(pair.contract)] == before
    # The other lead was not stored under any name: with a key of its own it is a new lead.
    assert_answers_equal(pair.post(LEAD, other, headers=key("order-3")), 202)


def test_a_single_leads_key_never_meets_a_batch_sent_with_a_key(sides):
    pair = sides()
    lead = lead_json()
    batch = pair.post(BATCH, batch_body([lead]), headers=key("K"))
    assert_answers_equal(batch, 202)
    # "K:0" was index 0 of batch K once; and K itself names a single lead, not a batch's.
    for single_key in ("K:0", "K"):
        answers = pair.post(LEAD, lead, headers=key(single_key))
        assert_answers_equal(answers, 202)
        for side in (0, 1):
            status, headers, body = answers[side]
            assert REPLAYED not in headers
            assert body["trace_id"] != batch[side][2]["results"][0]["trace_id"]


def _admitted_once_room(pair, side: int, body: bytes, headers: dict, deadline: float):
    """The side's answer to the batch, sent again while the hourly budget still refuses it:
    the tenant's new budget reaches the live API's cache within a moment (a retry of a
    refused lead is a retry like any other)."""
    post = pair.fast_post if side == 0 else pair.contract_post
    while True:
        answer = post(BATCH, body, headers=headers)
        budget = [r for r in answer[2]["results"] if r.get("limit") == "hourly_budget"]
        if not budget or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def test_a_retried_batch_without_its_accepted_lead_admits_the_refused_ones(sides):
    pair = sides(hourly_budget=1)
    a, b, c = lead_json(), lead_json(), lead_json()
    first = pair.post(BATCH, batch_body([a, b, c]), headers=key("B"))
    assert_answers_equal(first, 202)
    for side in (0, 1):
        body = first[side][2]
        assert (body["accepted"], body["refused"]) == (1, 2), body
        assert [r.get("limit") for r in body["results"]] == [None, "hourly_budget", "hourly_budget"]

    for tenant in (pair.fast.tenant, pair.contract.tenant):
        tenant.hourly_budget = 100
        tenant.save(update_fields=["hourly_budget"])
    deadline = time.monotonic() + 10
    original = [first[side][2]["results"][0]["trace_id"] for side in (0, 1)]
    retried = {}
    for side in (0, 1):
        # The retry without a, the lead accepted: b is index 0 now, and is not taken for a.
        status, headers, body = _admitted_once_room(
            pair, side, batch_body([b, c]), key("B"), deadline
        )
        assert status == 202 and REPLAYED not in headers, body
        assert (body["accepted"], body["duplicates"], body["refused"]) == (2, 0, 0), body
        for result in body["results"]:
            assert result["status"] == "queued" and "replayed" not in result, result
            assert result["trace_id"] != original[side]
        retried[side] = [result["trace_id"] for result in body["results"]]

    # Every lead again, in another order: each answered with its own original result.
    again = pair.post(BATCH, batch_body([c, a, b]), headers=key("B"))
    assert_answers_equal(again, 202)
    for side in (0, 1):
        status, headers, body = again[side]
        assert headers[REPLAYED] == "true"
        assert (body["accepted"], body["duplicates"]) == (3, 0), body
        assert [r["trace_id"] for r in body["results"]] == [
            retried[side][1],
            original[side],
            retried[side][0],
        ]
        assert all(r["replayed"] is True for r in body["results"])


def test_a_keyed_batch_retried_with_a_new_lead_admits_it_and_replays_the_rest(sides):
    pair = sides()
    a, b, new = lead_json(), lead_json(), lead_json()
    first = pair.post(BATCH, batch_body([a, b]), headers=key("C"))
    assert_answers_equal(first, 202)
    # The new lead, and a sent twice: the second a is a duplicate of the first, in one request.
    retry = pair.post(BATCH, batch_body([new, a, b, a]), headers=key("C"))
    assert_answers_equal(retry, 202)
    for side in (0, 1):
        status, headers, body = retry[side]
        assert REPLAYED not in headers  # not every lead was a replay
        assert (body["accepted"], body["duplicates"]) == (3, 1), body
        results = body["results"]
        assert "replayed" not in results[0] and results[0]["status"] == "queued"
        sent = first[side][2]["results"]
        assert [results[1]["trace_id"], results[2]["trace_id"]] == [r["trace_id"] for r in sent]
        assert results[1]["replayed"] is results[2]["replayed"] is True
        assert results[3] == {
            "index": 3,
            "trace_id": sent[0]["trace_id"],
            "duplicate": True,
            "tier": "normal",
        }


def test_without_a_key_a_repeat_is_still_a_duplicate(sides):
    pair = sides()
    lead = lead_json()
    first = pair.post(LEAD, lead)
    assert_answers_equal(first, 202)
    repeat = pair.post(LEAD, lead)
    assert_answers_equal(repeat, 200)
    batch = pair.post(BATCH, batch_body([lead]))
    assert_answers_equal(batch, 200)
    for side in (0, 1):
        original = first[side][2]["trace_id"]
        status, headers, body = repeat[side]
        assert REPLAYED not in headers
        assert body == {"trace_id": original, "duplicate": True, "tier": "normal"}
        assert batch[side][2]["results"] == [{"index": 0, **body}]
