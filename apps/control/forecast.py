"""Arrivals forecast per tier, 5 and 10 minutes ahead, so the pools scale before load arrives.

Method: Holt's linear trend with a damped trend (Gardner & McKenzie), over the arrival rate
the controller measures in steps of FORECAST_STEP_SECONDS (10 s): leads admitted per second,
what left the inbox for pool A plus what the inbox grew by. ALPHA and BETA smooth the level
and the trend; PHI damps the trend each step ahead, so a ramp is followed for minutes without
being extrapolated forever. Why not a seasonal model or a library (statsforecast): when a
deployment most needs to scale it has hours of its own history at best, the 5-10 minute
horizon is far shorter than a daily season, and this is a dozen lines with no dependency.

From the arrivals forecast and the drain rate the controller measures: the backlog each tier
would have at the horizon if the pools kept their size. The autoscalers read it next to the
current backlog (apps/health/api.py backlog) and scale on the larger need.
"""

import math
from dataclasses import dataclass

from django.conf import settings

ALPHA = 0.3  # weight of the newest step in the level
BETA = 0.05  # weight of the newest step's change in the trend
PHI = 0.98  # trend damping per step ahead
HORIZONS = {"5m": 300.0, "10m": 600.0}


@dataclass(slots=True)
class Holt:
    """Damped Holt's linear trend over one series sampled every step."""

    level: float | None = None
    trend: float = 0.0

    def observe(self, value: float) -> None:
        if self.level is None:
            self.level = value
            return
        previous = self.level
        self.level = ALPHA * value + (1 - ALPHA) * (previous + PHI * self.trend)
        self.trend = BETA * (self.level - previous) + (1 - BETA) * PHI * self.trend

    def forecast(self, steps: int) -> float:
        """The value `steps` steps ahead (never below 0: a rate)."""
        if self.level is None:
            return 0.0
        damped = PHI * (1 - PHI**steps) / (1 - PHI)  # PHI + PHI**2 + ... + PHI**steps
        return max(0.0, self.level + damped * self.trend)

    def backlog_growth(self, steps: int, step_seconds: float, capacity: float) -> float:
        """Leads that would pile up over `steps` steps if `capacity` leads/s were drained: the
        forecast arrivals above capacity, step by step (a backlog never goes below 0)."""
        backlog = 0.0
        for k in range(1, steps + 1):
            backlog = max(0.0, backlog + (self.forecast(k) - capacity) * step_seconds)
        return backlog

    def as_redis(self) -> dict[str, str]:
        return {"level": repr(self.level or 0.0), "trend": repr(self.trend)}

    @classmethod
    def from_redis(cls, raw: dict) -> "Holt":
        """The model as saved; a fresh one when nothing or something unreadable was (a model
        starts over in a few steps: never a reason for the controller not to run)."""
        try:
            level, trend = float(raw[b"level"]), float(raw.get(b"trend", 0.0))
        except (KeyError, ValueError):
            return cls()
        if not (math.isfinite(level) and math.isfinite(trend)):
            return cls()
        return cls(level, trend)


@dataclass(frozen=True, slots=True)
class TierForecast:
    rate_now: float  # the arrival rate as smoothed now (the level), leads/s
    rates: dict[str, float]  # horizon name -> arrival rate forecast then, leads/s
    backlogs: dict[str, float]  # horizon name -> backlog forecast then, leads


def steps_for(horizon_seconds: float) -> int:
    return math.ceil(horizon_seconds / settings.FORECAST_STEP_SECONDS)


def tier_forecast(model: Holt, backlog: int, drain_rate: float) -> TierForecast:
    """What `model` says of a tier whose backlog is `backlog` and drain rate `drain_rate`.

    Capacity is taken as the larger of the drain rate (measured while leads wait) and the
    arrival rate now: a tier without a backlog keeps up with at least what arrives, and is
    assumed to have no more headroom than that, so only growth beyond today's rate piles up.
    """
    rate_now = model.forecast(0)
    capacity = max(drain_rate, rate_now)
    rates, backlogs = {}, {}
    for name, seconds in HORIZONS.items():
        steps = steps_for(seconds)
        rates[name] = model.forecast(steps)
        step_seconds = settings.FORECAST_STEP_SECONDS
        backlogs[name] = backlog + model.backlog_growth(steps, step_seconds, capacity)
    return TierForecast(rate_now=rate_now, rates=rates, backlogs=backlogs)


def replicas_desired(need: float, per_replica: float, least: int, most: int) -> int:
    """Replicas for `need` units of work at `per_replica` units each, within [least, most]:
    what KEDA computes from the same figures (ceil(value / targetValue))."""
    return min(most, max(least, math.ceil(need / per_replica) if per_replica > 0 else least))
