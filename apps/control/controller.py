"""The controller: once a second, measure each tier (backlog, lag, drain rate) from Redis and
publish what the intake needs for honest answers (drain rates, mode).

This is the seam for overload control: the mode machine, backpressure and shedding hang off
`Controller.tick`, fed by the same measurements (it returns them).
"""

import time
from dataclasses import dataclass

from apps.intake import inbox
from leadflow.redis_conn import get_redis
from workers.queues import TIERS

# Weight of the newest sample in the drain-rate average: smooth, yet current within seconds.
DRAIN_EWMA_ALPHA = 0.3


@dataclass(frozen=True, slots=True)
class TierMeasure:
    tier: str
    backlog: int
    lag_seconds: float  # age of the oldest waiting lead; 0 when none waits
    drain_rate: float  # leads/s leaving the inboxes, averaged; 0 until measured


class Controller:
    def __init__(self) -> None:
        self._drain: dict[str, float] = {}
        self._last_tick: float | None = None
        self._last_dispatched: dict[str, int] = {}

    def tick(self, dispatched: dict[str, int]) -> dict[str, TierMeasure]:
        """Measure every tier; `dispatched` is the dispatcher's running count of leads per tier."""
        now = time.time()
        backlogs = inbox.backlog_by_tier()
        elapsed = now - self._last_tick if self._last_tick else None
        measures = {}
        for tier in TIERS:
            backlog = backlogs[tier]
            moved = dispatched.get(tier, 0) - self._last_dispatched.get(tier, 0)
            # The rate is only measured while leads wait: an idle tier says nothing of capacity.
            if elapsed and (backlog.waiting or moved):
                sample = moved / elapsed
                previous = self._drain.get(tier)
                self._drain[tier] = (
                    sample
                    if previous is None
                    else DRAIN_EWMA_ALPHA * sample + (1 - DRAIN_EWMA_ALPHA) * previous
                )
            lag = now - backlog.oldest_received_at if backlog.oldest_received_at else 0.0
            measures[tier] = TierMeasure(
                tier=tier,
                backlog=backlog.waiting,
                lag_seconds=max(lag, 0.0),
                drain_rate=self._drain.get(tier, 0.0),
            )
        self._last_tick = now
        self._last_dispatched = dict(dispatched)
        self._publish(measures)
        return measures

    def _publish(self, measures: dict[str, TierMeasure]) -> None:
        # The intake reads these for estimated_completion (admit.lua); the mode needs no write
        # while it is always normal: the script reads a missing mode as "normal".
        rates = {m.tier: f"{m.drain_rate:.3f}" for m in measures.values() if m.drain_rate > 0}
        if rates:
            get_redis().hset(inbox.DRAIN_KEY, mapping=rates)
