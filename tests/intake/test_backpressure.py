"""Backpressure and honest answers, with the control process stopped: the backlog, the drain
rate and the closed tiers are the ones each test sets in Redis, so the numbers are known."""

import math
import time
import uuid
from datetime import datetime

import orjson
import pytest

from leadflow import redis_keys
from leadflow.queues import TIERS
from leadflow.redis_conn import get_inbox_redis, get_redis
from tests.intake import test_contract_differential as differential
from tests.intake.test_contract_differential import LEAD
from tests.intake.test_idempotency import same_answer, same_headers
from tests.live.api import auth

pytestmark = pytest.mark.django_db(transaction=True)

DRAIN_RATE = 1000.0  # leads/s, as if measured by the controller

sides = differential.sides  # the fixture: a tenant for each way in (fast path, contract views)


def a_lead(priority: str) -> dict:
    return {"email": f"{uuid.uuid4().hex[:12]}@example.com", "priority": priority}


def shards_set(mapping: dict) -> None:
    """Fields of every shard's hash (admission reads its tenant's shard's copy)."""
    pipe = get_inbox_redis().pipeline(transaction=False)
    for shard in redis_keys.shards():
        pipe.hset(redis_keys.shard_key(shard), mapping=mapping)
    pipe.execute()


def mode_set(mode: str) -> None:
    """As the controller publishes it: the global copy and every shard's."""
    get_redis().set(redis_keys.MODE_KEY, mode)
    shards_set({"mode": mode})


@pytest.fixture
def known_state(control_stopped):
    """A drain rate of 1000 leads/s and no tier closed; whatever a test adds to the backlog
    counters (of every shard) is taken away again."""
    client = get_inbox_redis()
    closed = [f"closed:{tier}" for tier in TIERS]
    saved = [client.hget(redis_keys.shard_key(shard), "drain") for shard in redis_keys.shards()]
    shards_set({"drain": DRAIN_RATE})
    for shard in redis_keys.shards():
        client.hdel(redis_keys.shard_key(shard), *closed)
    added: dict[str, int] = {}

    def add_backlog(tier: str, leads: int) -> None:
        for shard in redis_keys.shards():
            client.hincrby(redis_keys.shard_key(shard), tier, leads)
        added[tier] = added.get(tier, 0) + leads

    yield add_backlog
    for shard, drain in zip(redis_keys.shards(), saved, strict=True):
        key = redis_keys.shard_key(shard)
        for tier, leads in added.items():
            client.hincrby(key, tier, -leads)
        client.hdel(key, *closed, "drain")
        if drain is not None:
            client.hset(key, "drain", drain)


def backlog(tenant_id: int = 0) -> dict[str, int]:
    """The leads waiting ahead, as the tenant's shard counts them: its own, and with more than
    one shard, the others' as of the controller's last tick."""
    key = redis_keys.shard_key(redis_keys.shard_of(tenant_id))
    counts = get_inbox_redis().hmget(key, [*TIERS, *(f"others:{tier}" for tier in TIERS)])
    mine, others = counts[:3], counts[3:]
    return {tier: int(m or 0) + int(o or 0) for tier, m, o in zip(TIERS, mine, others, strict=True)}


def test_a_tier_over_its_backlog_bound_is_429_with_retry_after_from_the_drain_rate(
    api, make_tenant, known_state, settings
):
    tenant, key = make_tenant()
    bound = settings.BACKPRESSURE_BACKLOG["low"]  # the live API runs with the same defaults
    waiting = sum(backlog(tenant.id).values())
    known_state("low", bound - waiting - 1)  # one place left for LOW

    assert api.post("/api/v1/leads", json=a_lead("low"), headers=auth(key)).status_code == 202
    refused = api.post("/api/v1/leads", json=a_lead("low"), headers=auth(key))
    assert refused.status_code == 429
    body = refused.json()
    assert body["limit"] == "backpressure"
    # Everything waiting ahead of the lead, drained at the measured rate.
    expected = math.ceil(sum(backlog(tenant.id).values()) / DRAIN_RATE)
    assert body["retry_after"] == expected == int(refused.headers["Retry-After"])

    # The tiers dispatched first still have room.
    for tier in ("normal", "critical"):
        answer = api.post("/api/v1/leads", json=a_lead(tier), headers=auth(key))
        assert answer.status_code == 202, answer.text


def test_retry_after_is_clamped_to_300_seconds(api, make_tenant, known_state, settings):
    _, key = make_tenant()
    shards_set({"drain": 1.0})  # 1 lead/s: a backlog of days
    known_state("low", settings.BACKPRESSURE_BACKLOG["low"])
    refused = api.post("/api/v1/leads", json=a_lead("low"), headers=auth(key))
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "300"


def test_critical_intake_is_refused_last(api, make_tenant, known_state, settings):
    _, key = make_tenant(critical_capacity=1000)
    known_state("normal", settings.BACKPRESSURE_BACKLOG["normal"])
    codes = {
        tier: api.post("/api/v1/leads", json=a_lead(tier), headers=auth(key)).status_code
        for tier in ("low", "normal", "critical")
    }
    assert codes == {"low": 429, "normal": 429, "critical": 202}


def test_a_demoted_critical_lead_meets_the_normal_tiers_backpressure(
    api, make_tenant, known_state, settings
):
    _, key = make_tenant(critical_capacity=1, critical_refill_per_second=0)
    known_state("normal", settings.BACKPRESSURE_BACKLOG["normal"])
    assert api.post("/api/v1/leads", json=a_lead("critical"), headers=auth(key)).status_code == 202
    refused = api.post("/api/v1/leads", json=a_lead("critical"), headers=auth(key))
    assert refused.status_code == 429 and refused.json()["limit"] == "backpressure"


def test_a_tier_the_controller_closed_answers_with_its_retry_after(api, make_tenant, known_state):
    _, key = make_tenant()
    shards_set({"closed:normal": 42, "closed:low": 42})
    refused = api.post("/api/v1/leads", json=a_lead("normal"), headers=auth(key))
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "42"
    assert api.post("/api/v1/leads", json=a_lead("critical"), headers=auth(key)).status_code == 202


def test_position_and_eta_come_from_the_backlog_ahead_and_the_drain_rate(
    api, make_tenant, known_state
):
    tenant, key = make_tenant()
    known_state("critical", 3000)  # 3 s of work ahead of any normal lead
    before = backlog(tenant.id)
    sent = time.time()
    answer = api.post("/api/v1/leads", json=a_lead("normal"), headers=auth(key)).json()
    assert answer["position"] == before["critical"] + before["normal"] + 1
    eta = datetime.fromisoformat(answer["estimated_completion"]).timestamp()
    assert eta - sent == pytest.approx(answer["position"] / DRAIN_RATE, abs=0.5)

    # GET tells the same while the lead waits (nothing is dispatched: control is stopped).
    status = api.get(f"/api/v1/leads/{answer['trace_id']}", headers=auth(key)).json()
    assert status["status"] == "queued"
    assert status["position"] == answer["position"]
    eta_now = datetime.fromisoformat(status["estimated_completion"]).timestamp()
    assert eta_now - time.time() == pytest.approx(status["position"] / DRAIN_RATE, abs=0.5)


def test_an_overloaded_mode_adds_retry_after_for_status_polling(api, make_tenant, known_state):
    _, key = make_tenant()
    mode_set("thin")
    try:
        known_state("normal", 20_000)  # 20 s at 1000 leads/s
        response = api.post("/api/v1/leads", json=a_lead("normal"), headers=auth(key))
        assert response.status_code == 202
        assert response.headers["X-LeadFlow-Mode"] == "thin"
        body = response.json()
        assert body["retry_after"] == math.ceil(body["position"] / DRAIN_RATE)
    finally:
        mode_set("normal")


def test_a_replay_is_the_answer_of_the_mode_and_backlog_it_was_admitted_in(sides, known_state):
    """A retry with the same Idempotency-Key and lead, after the mode, the backlog and the
    drain rate changed, still gets the original answer to the byte (its position, estimated
    completion and retry_after; its X-LeadFlow-Mode), on the fast path and the contract views."""
    pair = sides()
    mode_set("thin")
    try:
        shards_set({"drain": 1000 / 3})  # not a short decimal
        known_state("normal", 20_000)
        body = orjson.dumps(a_lead("normal"))
        first = pair.post(LEAD, body, headers={"Idempotency-Key": "thin-1"}, raw=True)
    finally:
        mode_set("normal")
    shards_set({"drain": DRAIN_RATE})
    known_state("normal", 5_000)
    again = pair.post(LEAD, body, headers={"Idempotency-Key": "thin-1"}, raw=True)
    for (status, headers, content), replay in zip(first, again, strict=True):
        assert status == 202 and headers["x-leadflow-mode"] == "thin", content
        assert orjson.loads(content)["retry_after"] >= 60  # 20,000 leads at 333/s
        assert same_answer(replay) == (
            202,
            {**same_headers(headers), "idempotent-replayed": "true"},
            content,
        )
