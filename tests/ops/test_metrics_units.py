"""The metrics' building blocks against the real Redis and PostgreSQL, in this process: the
intake's counters, bounded tenant labels, the ranking, the intake's WSGI wrapper, the control
collector and the status page's history."""

import time
import uuid
from types import SimpleNamespace

import orjson
import pytest
from prometheus_client import REGISTRY, generate_latest

from apps.control.forecast import TierForecast
from apps.control.history import history_append, history_read
from apps.control.modes import Shedding
from apps.status import metrics as control_metrics
from apps.status import selectors
from apps.status.metrics import FAMILIES, ControlCollector, tenant_lags, tenant_ranking
from leadflow import metrics, redis_keys
from leadflow.metrics import IntakeRequestMetrics, TenantLabels
from leadflow.redis_conn import get_redis
from tests.factories import tenant_make
from tests.ops.scrape import Scrape


def registry_value(name: str, **labels: str) -> float:
    return Scrape(generate_latest(REGISTRY).decode()).value(name, **labels)


@pytest.fixture
def ranking_key():
    key = f"lf:test:ranking:{uuid.uuid4().hex}"
    yield key
    get_redis().delete(key)


def test_intake_decisions_are_counted_by_tenant_tier_outcome_and_reason(monkeypatch):
    monkeypatch.setattr(metrics, "tenant_label", lambda tenant_id: str(tenant_id))
    name = "leadflow_intake_decisions_total"
    before = {
        "accepted": registry_value(name, tenant="9001", tier="normal", outcome="accepted"),
        "demoted": registry_value(name, tenant="9001", tier="normal", outcome="demoted"),
        "budget": registry_value(
            name, tenant="9001", tier="low", outcome="rate_limited", reason="hourly_budget"
        ),
        "invalid": registry_value(name, tenant="9001", tier="normal", outcome="invalid"),
    }

    metrics.intake_decisions_count(9001, "normal", "accepted", n=3)
    metrics.intake_decisions_count(9001, "normal", "demoted")
    metrics.intake_decisions_count(9001, "low", "rate_limited", n=2, reason="hourly_budget")
    metrics.intake_decisions_count(9001, "normal", "invalid", reason="invalid_fields")

    assert registry_value(name, tenant="9001", tier="normal", outcome="accepted") == (
        before["accepted"] + 3
    )
    assert registry_value(name, tenant="9001", tier="normal", outcome="demoted") == (
        before["demoted"] + 1
    )
    assert registry_value(
        name, tenant="9001", tier="low", outcome="rate_limited", reason="hourly_budget"
    ) == (before["budget"] + 2)
    assert registry_value(
        name, tenant="9001", tier="normal", outcome="invalid", reason="invalid_fields"
    ) == (before["invalid"] + 1)


@pytest.mark.parametrize(
    ("tier", "outcome", "reason"),
    [
        ("urgent", "accepted", ""),  # not a tier
        ("normal", "queued", ""),  # not an outcome
        ("normal", "rate_limited", ""),  # a 429 names its limit
        ("normal", "rate_limited", "per_minute"),  # not a limit
        ("normal", "accepted", "because"),  # only refusals and invalid leads have reasons
        ("normal", "invalid", "Email Address!"),  # an error code, not free text
    ],
)
def test_intake_decisions_refuse_label_values_outside_their_set(tier, outcome, reason):
    with pytest.raises(ValueError):
        metrics.intake_decisions_count(1, tier, outcome, reason=reason)


def test_intake_errors_are_counted_by_status_and_code():
    name = "leadflow_intake_errors_total"
    before = registry_value(name, status="415", reason="unsupported_media_type")
    metrics.intake_errors_count(415, "unsupported_media_type", n=2)
    assert registry_value(name, status="415", reason="unsupported_media_type") == before + 2
    with pytest.raises(ValueError):
        metrics.intake_errors_count(500, "server_error")
    with pytest.raises(ValueError):
        metrics.intake_errors_count(400, "the field 'x' is bad")


def test_ranked_tenants_get_their_id_and_the_rest_are_other(ranking_key):
    get_redis().rpush(ranking_key, "11", "12")
    labels = TenantLabels(top_n=2, refresh_seconds=3600, key=ranking_key)
    assert labels.label(11) == "11"
    assert labels.label("12") == "12"
    assert labels.label(13) == "other"


def test_tenant_labels_are_bounded_whatever_the_ranking_does(ranking_key):
    """A label once given stays (no flickering series); at most 2 x N are ever given."""
    client = get_redis()
    labels = TenantLabels(top_n=2, refresh_seconds=3600, key=ranking_key)
    given = set()
    for first in range(0, 40, 2):  # the ranking moves on to new tenants 20 times
        client.delete(ranking_key)
        client.rpush(ranking_key, first, first + 1)
        labels.refresh()
        given |= {label for t in (first, first + 1) if (label := labels.label(t)) != "other"}
    assert len(given) == 4
    assert labels.label(0) == "0"  # given first, kept though long out of the ranking
    assert labels.label(38) == "other"  # ranked now, but the process has given its 2 x N


@pytest.mark.django_db
def test_tenants_rank_by_leads_accepted_this_hour_plus_waiting():
    quiet, _ = tenant_make("quiet")
    busy, _ = tenant_make("busy")
    waiting, _ = tenant_make("waiting")
    client = get_redis()
    hour = int(client.time()[0]) // 3600
    client.hset(redis_keys.budget_key(busy.id), mapping={"hour": hour, "used": 10_000_000})
    client.hset(redis_keys.budget_key(quiet.id), mapping={"hour": hour - 1, "used": 20_000_000})
    client.rpush(redis_keys.inbox_key("low", waiting.id), *[b"{}"] * 5_000)
    try:
        ranked = tenant_ranking(top_n=100_000)
    finally:
        client.delete(
            redis_keys.budget_key(busy.id),
            redis_keys.budget_key(quiet.id),
            redis_keys.inbox_key("low", waiting.id),
        )
    # last hour's usage does not count; a backlog does
    assert ranked.index(busy.id) < ranked.index(waiting.id) < ranked.index(quiet.id)
    assert ranked[0] == busy.id


def test_intake_wrapper_counts_and_times_the_intake_posts_only():
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        start_response("202 Accepted", [])
        return [b"{}"]

    wrapped = IntakeRequestMetrics(app, ["/api/v1/leads", "/boom"])
    count = "leadflow_intake_requests_total"
    before = registry_value(count, path="/api/v1/leads", status="202")
    timed = registry_value("leadflow_intake_request_duration_seconds_count", path="/api/v1/leads")
    boom = registry_value(count, path="/boom", status="500")

    def call(method, path):
        return wrapped({"REQUEST_METHOD": method, "PATH_INFO": path}, lambda *a: None)

    assert call("POST", "/api/v1/leads") == [b"{}"]
    call("GET", "/api/v1/leads")  # not the intake's POST: Django counts it
    call("POST", "/healthz")
    with pytest.raises(RuntimeError):
        call("POST", "/boom")

    assert registry_value(count, path="/api/v1/leads", status="202") == before + 1
    assert (
        registry_value("leadflow_intake_request_duration_seconds_count", path="/api/v1/leads")
        == timed + 1
    )
    assert registry_value(count, path="/boom", status="500") == boom + 1


@pytest.fixture
def inboxes():
    """push(tier, tenant_id, *ages): inbox entries as admission writes them, received that many
    seconds ago (oldest first), the tenant marked active in the tier and counted in the tier's
    backlog; removed afterwards. (Uncounted entries that a dispatcher claimed would leave the
    backlog counter below zero, and the pipeline stalled for the tests that follow.)"""
    client = get_redis()
    pushed: list[tuple[str, int]] = []

    def push(tier: str, tenant_id: int, *ages: float) -> None:
        now = time.time()
        entries = [
            orjson.dumps(
                {"trace_id": str(uuid.uuid4()), "tenant_id": tenant_id, "received_at": now - age}
            )
            for age in ages
        ]
        client.rpush(redis_keys.inbox_key(tier, tenant_id), *entries)
        client.sadd(redis_keys.active_tenants_key(tier), tenant_id)
        client.hincrby(redis_keys.BACKLOG_KEY, tier, len(entries))
        pushed.append((tier, tenant_id))

    yield push
    for tier, tenant_id in pushed:
        left = client.llen(redis_keys.inbox_key(tier, tenant_id))
        client.delete(redis_keys.inbox_key(tier, tenant_id))
        client.srem(redis_keys.active_tenants_key(tier), tenant_id)
        client.hincrby(redis_keys.BACKLOG_KEY, tier, -left)


def test_each_active_inbox_gives_its_length_and_its_oldest_leads_age(control_stopped, inboxes):
    # control_stopped: no dispatcher takes these leads of tenants that do not exist.
    base = 9_100_000 + uuid.uuid4().int % 1000 * 10
    inboxes("normal", base + 1, 120.0, 30.0, 1.0)
    inboxes("low", base + 1, 10.0)
    inboxes("critical", base + 2, 0.5)
    get_redis().sadd(redis_keys.active_tenants_key("low"), base + 3)  # active, already drained
    try:
        read = selectors.tenant_inboxes()
    finally:
        get_redis().srem(redis_keys.active_tenants_key("low"), base + 3)

    assert read[base + 1]["normal"].waiting == 3
    assert read[base + 1]["normal"].lag_seconds == pytest.approx(120.0, abs=2.0)
    assert read[base + 1]["low"].lag_seconds == pytest.approx(10.0, abs=2.0)
    assert set(read[base + 2]) == {"critical"}
    assert base + 3 not in read  # nothing waits: no lag to show
    laggiest = selectors.tenants_laggiest(read, 2)
    assert [(t, tier) for t, tier, _ in laggiest] == [(base + 1, "normal"), (base + 1, "low")]


def test_tenant_lag_is_each_labelled_tenants_oldest_and_the_oldest_of_the_rest(monkeypatch):
    monkeypatch.setattr(
        control_metrics, "tenant_label", lambda tenant_id: "1" if tenant_id == 1 else "other"
    )
    figure = selectors.TenantInbox
    lags = tenant_lags(
        {
            1: {"normal": figure(5, 40.0), "low": figure(1, 2.0)},
            2: {"normal": figure(9, 310.0)},
            3: {"normal": figure(1, 12.0), "critical": figure(1, 0.4)},
        }
    )
    assert lags == {
        ("1", "normal"): 40.0,
        ("1", "low"): 2.0,
        ("other", "normal"): 310.0,  # the oldest of the others, not a sum of ages
        ("other", "critical"): 0.4,
    }


def _fake_controller(**shedding) -> SimpleNamespace:
    measure = SimpleNamespace
    return SimpleNamespace(
        ticked_at=1_800_000_000.0,
        shedding=Shedding(**shedding),
        measures={
            "critical": measure(backlog=3, lag_seconds=1.5, drain_rate=40.0, inflight=0),
            "normal": measure(backlog=700, lag_seconds=42.0, drain_rate=120.0, inflight=200),
            "low": measure(backlog=0, lag_seconds=0.0, drain_rate=0.0, inflight=0),
        },
        arrival_rates={"critical": 5.0, "normal": 150.0, "low": 0.0},
        forecasts={
            "normal": TierForecast(
                rate_now=150.0,
                rates={"5m": 210.0, "10m": 240.0},
                backlogs={"5m": 9000.0, "10m": 21000.0},
            )
        },
        replicas={"a": 2, "b": 1, "c": 1},
    )


@pytest.mark.django_db
def test_control_collector_exports_the_last_tick_and_the_mode():
    collected = list(ControlCollector(_fake_controller(mode="thin", low_paused=True)).collect())
    names = {family.name for family in collected}
    assert names == set(FAMILIES)  # every family, each once
    samples = Scrape(generate_latest(_registry_of(collected)).decode())
    assert samples.value("leadflow_control_leader") == 1
    assert samples.value("leadflow_tier_lag_seconds", tier="normal") == 42.0
    assert samples.value("leadflow_tier_backlog", tier="normal") == 700
    assert samples.value("leadflow_tier_inflight", tier="normal") == 200
    assert samples.value("leadflow_tier_drain_rate", tier="critical") == 40.0
    assert samples.value("leadflow_mode", mode="thin") == 1
    assert samples.value("leadflow_mode", mode="normal") == 0
    assert samples.value("leadflow_low_paused") == 1
    assert samples.value("leadflow_breaker_state", dependency="ai", state="closed") == 1
    assert samples.value("leadflow_tier_arrival_rate", tier="normal") == 150.0
    assert samples.value("leadflow_forecast_arrival_rate", tier="normal", horizon="10m") == 240.0
    assert samples.value("leadflow_forecast_backlog", tier="normal", horizon="5m") == 9000.0
    assert samples.value("leadflow_pool_desired_replicas", pool="a") == 2


def test_a_standby_control_exports_only_that_it_does_not_lead():
    [family] = ControlCollector(None).collect()
    assert family.name == "leadflow_control_leader"
    assert family.samples[0].value == 0


def _registry_of(families):
    class Fixed:
        def collect(self):
            return families

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(Fixed())
    return registry


def test_history_keeps_the_ticks_of_the_last_15_minutes_oldest_first():
    now = time.time()
    marker = f"test-{uuid.uuid4().hex[:6]}"
    measures = _fake_controller().measures
    forecast = TierForecast(rate_now=150.0, rates={"5m": 210.0, "10m": 240.0}, backlogs={})
    history_append(now - 2, measures, marker, {"normal": 150.0}, {"normal": forecast})
    history_append(now - 1, measures, marker + "-later")
    mine = [s for s in history_read() if s["mode"].startswith(marker)]
    assert [s["mode"] for s in mine] == [marker, marker + "-later"]
    assert mine[0]["tiers"]["normal"] == {
        "backlog": 700,
        "inflight": 200,
        "lag": 42.0,
        "drain": 120.0,
        "arrivals": 150.0,
        "forecast_5m": 210.0,
    }
    assert all(s["at"] >= now - 900 for s in history_read())
