"""The mode machine (hysteresis, dwell, the emergency's shedding order) and the controller
measuring a backlog built in Redis, auditing and publishing what it decides."""

import time
import uuid

import orjson
import pytest

from apps import inbox
from apps.control.controller import Controller, TierMeasure, tiers_closed
from apps.control.models import ControlEvent, Mode, Policy
from apps.control.modes import FEATURE_SHED_ORDER, ModeMachine, shedding_for
from leadflow import redis_keys
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import CONTROL_STATE_KEY


@pytest.fixture
def thresholds(settings):
    settings.MODE_THIN_ENTER_LAG = 30.0
    settings.MODE_THIN_EXIT_LAG = 10.0
    settings.MODE_SEVERE_ENTER_LAG = 300.0
    settings.MODE_SEVERE_EXIT_LAG = 120.0
    settings.MODE_EMERGENCY_ENTER_LAG = 60.0
    settings.MODE_EMERGENCY_EXIT_LAG = 20.0
    settings.MODE_DWELL_SECONDS = 5.0
    return settings


def run(machine: ModeMachine, lags: list[tuple[float, float, float]]) -> list:
    """Feed (time, normal lag, critical lag) samples; returns every change."""
    changes = []
    for now, normal_lag, critical_lag in lags:
        changes += machine.observe(now, normal_lag, critical_lag)
    return changes


def test_thin_comes_on_only_after_the_dwell_and_goes_off_only_under_the_lower_bound(thresholds):
    machine = ModeMachine()
    assert run(machine, [(t, 35.0, 0.0) for t in range(5)]) == []  # 4 s over: not yet
    [change] = run(machine, [(5, 35.0, 0.0)])
    assert (change.from_mode, change.to_mode) == (Mode.NORMAL, Mode.THIN)

    # Between the bounds (10 s < lag < 30 s) it stays THIN, however long.
    assert run(machine, [(t, 20.0, 0.0) for t in range(6, 600)]) == []
    assert machine.mode == Mode.THIN
    # Under the lower bound: NORMAL once that has held for the dwell time.
    assert run(machine, [(t, 9.0, 0.0) for t in range(600, 605)]) == []
    [change] = run(machine, [(605, 9.0, 0.0)])
    assert (change.from_mode, change.to_mode) == (Mode.THIN, Mode.NORMAL)


def test_a_lag_oscillating_around_one_threshold_does_not_flap(thresholds):
    machine = ModeMachine()
    # Over and under the upper bound every other second for 10 minutes.
    assert run(machine, [(t, 31.0 if t % 2 else 29.0, 0.0) for t in range(600)]) == []
    assert machine.mode == Mode.NORMAL
    run(machine, [(t, 31.0, 0.0) for t in range(600, 606)])
    assert machine.mode == Mode.THIN
    # Around the lower bound, in THIN: it stays THIN.
    assert run(machine, [(t, 11.0 if t % 2 else 9.0, 0.0) for t in range(606, 1200)]) == []
    assert machine.mode == Mode.THIN


def test_severe_after_five_minutes_of_lag_and_back_to_thin_under_its_lower_bound(thresholds):
    machine = ModeMachine()
    run(machine, [(t, 301.0, 0.0) for t in range(6)])
    assert machine.mode == Mode.SEVERE
    run(machine, [(t, 119.0, 0.0) for t in range(6, 12)])
    assert machine.mode == Mode.THIN


def test_an_emergency_sheds_one_feature_per_dwell_in_the_spec_order(thresholds):
    machine = ModeMachine()
    policy = Policy()
    changes = run(machine, [(t, 0.0, 61.0) for t in range(6)])
    assert [(c.kind, c.to_mode) for c in changes] == [("transition", Mode.EMERGENCY)]
    shed = []
    for level_at in (11, 16, 21):
        changes = run(machine, [(level_at, 0.0, 61.0)])
        assert [c.kind for c in changes] == ["shed"]
        shed.append(changes[0].reason.rsplit(" ", 1)[-1])
    assert shed == list(FEATURE_SHED_ORDER[1:])

    states = [shedding_for(Mode.NORMAL, level, policy, 25) for level in range(5)]
    assert [s.crm_throttled for s in states] == [False, True, True, True, True]
    assert [s.enrichment for s in states] == ["on", "on", "off", "off", "off"]
    assert [s.reports for s in states] == [True, True, True, False, False]
    assert [s.analytics for s in states] == [True, True, True, True, False]

    run(machine, [(t, 0.0, 19.0) for t in range(22, 28)])
    assert machine.mode == Mode.NORMAL and machine.emergency_level == 0


def test_an_operator_override_wins_and_switches_only_ever_shed_more(thresholds):
    forced = Policy(forced_mode=Mode.THIN, sampling_percent=40)
    assert shedding_for(Mode.NORMAL, 0, forced, 25).mode == Mode.THIN
    assert shedding_for(Mode.SEVERE, 0, Policy(forced_mode=Mode.NORMAL), 25).mode == Mode.NORMAL
    severe = shedding_for(Mode.SEVERE, 0, Policy(sampling_percent=40), 25)
    assert severe.sampling_percent == 40 and severe.low_paused
    paused = shedding_for(Mode.NORMAL, 0, Policy(pause_low=True, reports_off=True), 25)
    assert paused.mode == Mode.NORMAL and paused.low_paused and not paused.reports


def test_sampling_keeps_the_set_share_of_non_critical_leads_and_every_critical_one():
    state = shedding_for(Mode.SEVERE, 0, Policy(sampling_percent=30), 25)
    ids = [str(uuid.uuid4()) for _ in range(5000)]
    kept = sum(state.goes_on("normal", trace_id) for trace_id in ids) / len(ids)
    assert kept == pytest.approx(0.30, abs=0.03)
    assert all(state.goes_on("critical", trace_id) for trace_id in ids)
    # The same lead gets the same answer every time (a redelivered batch decides alike).
    assert [state.goes_on("low", t) for t in ids[:100]] == [
        state.goes_on("low", t) for t in ids[:100]
    ]


TEST_TENANT = 987654  # inboxes of a tenant id no test creates


def inbox_fill(tier: str, count: int, age_seconds: float) -> None:
    client = get_redis()
    received_at = time.time() - age_seconds
    entries = [
        inbox.entry_open(
            {"trace_id": f"t{i}", "tenant_id": TEST_TENANT, "received_at": received_at}
        )
        + f',"tier":"{tier}"}}'.encode()
        for i in range(count)
    ]
    inbox_empty()
    client.rpush(redis_keys.inbox_key(tier, TEST_TENANT), *entries)
    client.sadd(redis_keys.active_tenants_key(tier), TEST_TENANT)
    client.hincrby(redis_keys.BACKLOG_KEY, tier, count)


def inbox_empty() -> None:
    client = get_redis()
    for tier in ("critical", "normal", "low"):
        waiting = client.llen(redis_keys.inbox_key(tier, TEST_TENANT))
        client.delete(redis_keys.inbox_key(tier, TEST_TENANT))
        client.srem(redis_keys.active_tenants_key(tier), TEST_TENANT)
        client.hincrby(redis_keys.BACKLOG_KEY, tier, -waiting)


@pytest.mark.django_db(transaction=True)
def test_the_controller_turns_thin_on_from_a_backlog_in_redis_and_audits_why(
    control_stopped, thresholds
):
    thresholds.MODE_DWELL_SECONDS = 0.0
    get_redis().delete("lf:control:machine")
    controller = Controller()
    try:
        inbox_fill("normal", 50, age_seconds=40)
        measures = controller.tick({})
        assert measures["normal"].backlog >= 50 and measures["normal"].lag_seconds >= 40
        assert controller.shedding.mode == Mode.THIN

        event = ControlEvent.objects.get(kind="transition", to_mode=Mode.THIN)
        assert (event.from_mode, event.actor) == (Mode.NORMAL, "controller")
        assert event.measures["normal"]["lag_seconds"] >= 40
        state = get_redis().hgetall(CONTROL_STATE_KEY)
        assert state[b"mode"] == b"thin" and state[b"low_paused"] == b"True"
        assert get_redis().get(redis_keys.MODE_KEY) == b"thin"

        inbox_fill("normal", 50, age_seconds=20)  # under the upper bound, over the lower
        controller.tick({})
        assert controller.shedding.mode == Mode.THIN
        inbox_fill("normal", 50, age_seconds=5)
        controller.tick({})
        assert controller.shedding.mode == Mode.NORMAL
        assert ControlEvent.objects.filter(from_mode=Mode.THIN, to_mode=Mode.NORMAL).count() == 1
    finally:
        inbox_empty()
        controller.tick({})  # publish NORMAL again for the tests that follow
        get_redis().delete("lf:control:machine")


def test_a_tier_lagging_past_its_bound_is_closed_with_the_tiers_after_it(settings):
    settings.BACKPRESSURE_LAG_SECONDS = {"critical": 100.0, "normal": 30.0, "low": 600.0}
    measures = {
        "critical": TierMeasure("critical", backlog=10, lag_seconds=1.0, drain_rate=0.0),
        "normal": TierMeasure("normal", backlog=40, lag_seconds=45.0, drain_rate=0.0),
        "low": TierMeasure("low", backlog=5, lag_seconds=2.0, drain_rate=0.0),
    }
    # Retry-After: the backlog ahead of a new lead of the tier, at the total drain rate.
    assert tiers_closed(measures, drain_total=10.0) == {"normal": 5, "low": 6}
    assert tiers_closed(measures, drain_total=0.01) == {"normal": 300, "low": 300}
    quiet = {tier: TierMeasure(tier, 10, 1.0, 0.0) for tier in measures}
    assert tiers_closed(quiet, drain_total=10.0) == {}


def test_inbox_entry_is_json_the_pools_read():
    entry = inbox.entry_open({"trace_id": "x", "tenant_id": 1}) + b',"tier":"low"}'
    assert orjson.loads(entry) == {"trace_id": "x", "tenant_id": 1, "tier": "low"}
