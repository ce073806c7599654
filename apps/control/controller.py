"""The controller: once a second, measure each tier from Redis (backlog and lag, counting the
leads in flight as well as those waiting; drain rate), run
the mode machine, apply the operators' policy, and publish what every process needs:
the Shedding (mode and what runs), the drain rates (for honest answers), the tiers closed by
backpressure, and the backlog figures autoscalers read. Every change of mode is audited.
"""

import logging
import math
import time
from dataclasses import asdict, dataclass

from django.conf import settings
from django.utils import timezone

from apps import inbox
from apps.control import consumers
from apps.control.dispatcher import queue_lengths
from apps.control.forecast import Holt, TierForecast, replicas_desired, tier_forecast
from apps.control.history import history_write
from apps.control.models import ControlEvent, Mode, Policy
from apps.control.modes import Change, ModeMachine, Shedding, shedding_for
from apps.control.state import shedding_write
from leadflow import redis_keys
from leadflow.queues import TIERS
from leadflow.redis_conn import cluster_enabled, get_inbox_redis, get_redis
from leadflow.redis_keys import CONTROL_FORECAST_KEY, CONTROL_MACHINE_KEY, CONTROL_SCALING_KEY

log = logging.getLogger(__name__)

# Weight of the newest sample in the drain-rate average: smooth, yet current within seconds.
DRAIN_EWMA_ALPHA = 0.3
# While LOW is paused, the cancel is sent again this often, for workers started since.
LOW_PAUSE_REASSERT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class TierMeasure:
    tier: str
    backlog: int  # leads waiting in the inboxes or in flight (claimed, not yet stored)
    lag_seconds: float  # age of the oldest lead waiting or in flight; 0 when none
    drain_rate: float  # leads/s leaving the inboxes, averaged; 0 until measured
    inflight: int = 0  # of the backlog, the leads in flight
    waiting: int = 0  # of the backlog, the leads in the inboxes


class Controller:
    """The mode machine and what it publishes. In run_control, `lease` fences the published
    state (a controller whose term is over writes nothing) and `audit` queues the audit rows
    for the database thread; without them (tests, a shell) both happen here and now."""

    def __init__(self, lease=None, audit=None) -> None:
        self._drain: dict[str, float] = {}
        self._last_tick: float | None = None
        self._last_dispatched: dict[str, int] = {}
        self.machine: ModeMachine | None = None  # restored from Redis at the first tick
        self.shedding: Shedding | None = None
        self._forced = False
        self._low_paused_at: float | None = None  # when the cancel was last sent
        self._lease = lease
        self._audit_record = audit or control_event_create
        # The arrivals forecast (apps/control/forecast.py): a model per tier, fed a step's
        # arrival rate every FORECAST_STEP_SECONDS; restored from Redis at the first tick.
        self._models: dict[str, Holt] | None = None
        self._step_started = 0.0
        self._step_arrivals = dict.fromkeys(TIERS, 0)
        self._last_waiting: dict[str, int] | None = None
        self.arrival_rates: dict[str, float] = dict.fromkeys(TIERS, 0.0)  # the last step's
        self.forecasts: dict[str, TierForecast] = {}
        self.replicas: dict[str, int] = {}  # the last published (kept while scaling is frozen)
        # The last tick's measures, for the metrics collector (apps/status/metrics.py).
        self.measures: dict[str, TierMeasure] = {}
        self.ticked_at = 0.0
        # tier -> leads waiting per shard at the last tick (each shard is told the others').
        self._waiting_by_shard: dict[str, tuple[int, ...]] = {}

    def tick(self, dispatched: dict[str, int], policy: Policy | None = None) -> dict:
        """One control step; `dispatched` is the dispatcher's running count of leads per tier,
        `policy` the operators' (read from PostgreSQL here when not given)."""
        now = time.time()
        if policy is None:
            policy = Policy.current()
        if self.machine is None:
            self.machine = _machine_restore()
        inbox.legacy_keys_move()  # leads still in the key layout before shards (an upgrade)
        measures = self._measure(now, dispatched)
        self._forecast(now, measures)
        changes = self.machine.observe(
            now, measures["normal"].lag_seconds, measures["critical"].lag_seconds
        )
        shedding = shedding_for(
            self.machine.load_mode,
            self.machine.emergency_level,
            policy,
            settings.SEVERE_SAMPLING_PERCENT,
        )
        # Recorded before the publication, which a full or failing Redis may refuse: the mode
        # changed all the same (the dispatcher follows it), and the audit says so.
        for event in self._events(changes, shedding, policy, measures):
            self._audit_record(event)
        first = self.shedding is None
        self.shedding, self.measures, self.ticked_at = shedding, measures, now
        self._publish(now, measures, shedding)
        self._low_pause_apply(shedding.low_paused, now, first)
        return measures

    def _measure(self, now: float, dispatched: dict[str, int]) -> dict[str, TierMeasure]:
        backlogs = inbox.backlog_by_tier()
        elapsed = now - self._last_tick if self._last_tick else None
        measures = {}
        moved_total = 0
        for tier in TIERS:
            backlog = backlogs[tier]
            moved = dispatched.get(tier, 0) - self._last_dispatched.get(tier, 0)
            moved_total += moved
            # The rate is only measured while leads wait: an idle tier says nothing of capacity.
            if elapsed and (backlog.waiting or moved):
                self._drain[tier] = self._average(self._drain.get(tier), moved / elapsed)
            lag = now - backlog.oldest_received_at if backlog.oldest_received_at else 0.0
            measures[tier] = TierMeasure(
                tier=tier,
                backlog=backlog.waiting + backlog.inflight,
                lag_seconds=max(lag, 0.0),
                drain_rate=self._drain.get(tier, 0.0),
                inflight=backlog.inflight,
                waiting=backlog.waiting,
            )
            if self._last_waiting is not None:
                # What arrived: what the dispatcher took from the inbox, plus what it grew by.
                arrived = backlog.waiting - self._last_waiting[tier] + moved
                self._step_arrivals[tier] += max(arrived, 0)
        waiting = sum(backlog.waiting for backlog in backlogs.values())
        if elapsed and (waiting or moved_total):
            self._drain["total"] = self._average(self._drain.get("total"), moved_total / elapsed)
        self._last_tick = now
        self._last_dispatched = dict(dispatched)
        self._last_waiting = {tier: backlog.waiting for tier, backlog in backlogs.items()}
        self._waiting_by_shard = {tier: b.waiting_by_shard for tier, b in backlogs.items()}
        return measures

    def _forecast(self, now: float, measures: dict[str, TierMeasure]) -> None:
        """Feed each tier's model a step's arrival rate once a step has passed, and
        forecast from the models every tick (the backlog and drain rate change each tick)."""
        if self._models is None:
            self._models = _models_restore()
            self._step_started = now
        elapsed = now - self._step_started
        if elapsed >= settings.FORECAST_STEP_SECONDS:
            for tier in TIERS:
                self.arrival_rates[tier] = self._step_arrivals[tier] / elapsed
                self._models[tier].observe(self.arrival_rates[tier])
            self._step_arrivals = dict.fromkeys(TIERS, 0)
            self._step_started = now
        self.forecasts = {
            tier: tier_forecast(self._models[tier], m.backlog, m.drain_rate)
            for tier, m in measures.items()
        }

    @staticmethod
    def _average(previous: float | None, sample: float) -> float:
        if previous is None:
            return sample
        return DRAIN_EWMA_ALPHA * sample + (1 - DRAIN_EWMA_ALPHA) * previous

    def _events(self, changes: list[Change], shedding: Shedding, policy, measures) -> list:
        values = {tier: asdict(m) for tier, m in measures.items()}
        forced = bool(policy.forced_mode)
        events = []
        for change in changes:
            reason = change.reason
            if forced:
                reason += f" (not applied: the mode is forced to {policy.forced_mode})"
            events.append(
                _event(change.kind, change.from_mode, change.to_mode, "controller", reason, values)
            )
        before = self.shedding.mode if self.shedding else None
        if before is not None and shedding.mode != before and (forced or self._forced):
            actor = policy.updated_by or "admin"
            reason = (
                f"forced by {actor} on the policy page"
                if forced
                else f"override cleared by {actor}: the controller's mode applies"
            )
            events.append(
                _event(ControlEvent.Kind.TRANSITION, before, shedding.mode, actor, reason, values)
            )
        self._forced = forced
        return events

    def _publish(self, now: float, measures: dict[str, TierMeasure], shedding: Shedding) -> None:
        """Everything the tick tells the other processes, in one transaction (fenced)."""
        rates = {tier: f"{rate:.3f}" for tier, rate in self._drain.items() if rate > 0}
        closed = tiers_closed(measures, self._drain.get("total", 0.0))
        figures = None
        if not shedding.stop_scaling:
            # Pool A's work waits in the inboxes or in flight (the dispatcher keeps a.* a few
            # messages deep); B's and C's in their queues.
            figures = {f"a.{tier}": m.backlog for tier, m in measures.items()}
            figures |= {name: n for name, n in queue_lengths().items() if name[0] in "bc"}
            figures |= scaling_forecast_figures(self.forecasts)
            replicas = scaling_replicas(figures)
            figures |= {f"replicas.{pool}": n for pool, n in replicas.items()}
            self.replicas = replicas
        models = {
            f"{tier}.{field}": value
            for tier, model in (self._models or {}).items()
            for field, value in model.as_redis().items()
        }
        machine = {
            "load_mode": self.machine.load_mode,
            "emergency_level": self.machine.emergency_level,
        }

        shard_copies = shard_state_copies(rates.get("total"), closed, self._waiting_by_shard)

        def copies_write(pipe) -> None:
            """Each shard's copy of what admission reads (leadflow/redis_keys.py shard_key)."""
            for shard, copy in enumerate(shard_copies):
                key = redis_keys.shard_key(shard)
                if opened := [f"closed:{tier}" for tier in TIERS if tier not in closed]:
                    pipe.hdel(key, *opened)
                if copy:
                    pipe.hset(key, mapping=copy)

        def write(pipe) -> None:
            if rates:
                pipe.hset(redis_keys.DRAIN_KEY, mapping=rates)
            if not cluster_enabled():
                copies_write(pipe)
            if figures is not None:
                pipe.hset(CONTROL_SCALING_KEY, mapping=figures)
            pipe.hset(CONTROL_MACHINE_KEY, mapping=machine)
            if models:
                pipe.hset(CONTROL_FORECAST_KEY, mapping=models)
            shedding_write(pipe, shedding)
            # The status page's charts.
            history_write(pipe, now, measures, shedding.mode, self.arrival_rates, self.forecasts)

        if self._lease is not None:
            self._lease.transaction(write)
        else:
            pipe = get_redis().pipeline(transaction=True)
            write(pipe)
            pipe.execute()
        if cluster_enabled():  # the inboxes' Redis Cluster: after the (fenced) transaction
            pipe = get_inbox_redis().pipeline(transaction=False)
            copies_write(pipe)
            pipe.execute()

    def _low_pause_apply(self, paused: bool, now: float, first: bool) -> None:
        was_paused = self._low_paused_at is not None
        if paused and (not was_paused or now - self._low_paused_at >= LOW_PAUSE_REASSERT_SECONDS):
            if not was_paused:
                log.warning("control: LOW paused; cancelling the *.low consumers")
            consumers.low_consumers_cancel()
            self._low_paused_at = now
        elif not paused and (was_paused or first):
            # Also at start: a controller that died while LOW was paused left it cancelled.
            log.info("control: LOW runs; the *.low consumers are back")
            consumers.low_consumers_add()
            self._low_paused_at = None


def shard_state_copies(
    drain_total: str | None, closed: dict[str, int], waiting_by_shard: dict[str, tuple[int, ...]]
) -> list[dict[str, str | int]]:
    """Per shard, the fields of its hash the controller writes: the drain rate (once measured),
    the closed tiers' Retry-After, and with more than one shard, per tier the leads waiting in
    the other shards (admission adds them to its own shard's live count)."""
    copies = []
    for shard in redis_keys.shards():
        copy: dict[str, str | int] = {f"closed:{tier}": after for tier, after in closed.items()}
        if drain_total is not None:
            copy["drain"] = drain_total
        if redis_keys.SHARDS > 1:
            for tier, per_shard in waiting_by_shard.items():
                mine = per_shard[shard] if shard < len(per_shard) else 0
                copy[f"others:{tier}"] = sum(per_shard) - mine
        copies.append(copy)
    return copies


def scaling_forecast_figures(forecasts: dict[str, TierForecast]) -> dict[str, int]:
    """The autoscalers' forecast figures, "forecast.<pool>.<tier>", in each pool's units: pool
    A's the backlog forecast 5 minutes ahead (leads), B's and C's the same leads in messages
    (a dispatched batch is one message of up to DISPATCH_BATCH_MAX leads for each pool)."""
    figures = {}
    for tier, forecast in forecasts.items():
        leads = forecast.backlogs["5m"]
        figures[f"forecast.a.{tier}"] = math.ceil(leads)
        messages = math.ceil(leads / settings.DISPATCH_BATCH_MAX)
        figures[f"forecast.b.{tier}"] = figures[f"forecast.c.{tier}"] = messages
    return figures


def scaling_replicas(figures: dict[str, int]) -> dict[str, int]:
    """ "replicas.<pool>": the replicas each pool needs, from the larger of its current and its
    forecast figure per tier and the per-replica targets KEDA is given (AUTOSCALING)."""
    desired = {}
    for pool, scaling in settings.AUTOSCALING.items():
        need = max(
            replicas_desired(
                max(figures.get(f"{pool}.{tier}", 0), figures.get(f"forecast.{pool}.{tier}", 0)),
                per_replica,
                scaling["min_replicas"],
                scaling["max_replicas"],
            )
            for tier, per_replica in scaling["per_replica"].items()
        )
        desired[pool] = need
    return desired


def _models_restore() -> dict[str, Holt]:
    raw = get_redis().hgetall(CONTROL_FORECAST_KEY)
    models = {}
    for tier in TIERS:
        prefix = f"{tier}.".encode()
        fields = {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}
        models[tier] = Holt.from_redis(fields)
    return models


def tiers_closed(measures: dict[str, TierMeasure], drain_total: float) -> dict[str, int]:
    """Backpressure by lag: a tier whose oldest lead waited past its bound refuses new leads,
    and so do the tiers after it (critical is refused last). Value: the Retry-After."""
    closed: dict[str, int] = {}
    ahead = 0
    shut = False
    for tier in TIERS:
        ahead += measures[tier].backlog
        shut = shut or measures[tier].lag_seconds > settings.BACKPRESSURE_LAG_SECONDS[tier]
        if shut:
            rate = max(drain_total, 0.001)
            closed[tier] = max(1, min(settings.RETRY_AFTER_MAX_SECONDS, math.ceil(ahead / rate)))
    return closed


def _event(kind, from_mode, to_mode, actor, reason, measures) -> dict:
    log.warning("control: %s %s → %s by %s: %s", kind, from_mode, to_mode, actor, reason)
    return {
        "at": timezone.now(),
        "kind": kind,
        "from_mode": from_mode,
        "to_mode": to_mode,
        "actor": actor,
        "reason": reason,
        "measures": measures,
    }


def control_event_create(event: dict) -> None:
    """Write an audit row (the database thread writes queued ones with their original time)."""
    ControlEvent.objects.create(**event)


def _machine_restore() -> ModeMachine:
    saved = get_redis().hgetall(CONTROL_MACHINE_KEY)
    if not saved:
        return ModeMachine()
    return ModeMachine(
        load_mode=Mode(saved[b"load_mode"].decode()),
        emergency_level=int(saved[b"emergency_level"]),
    )
