"""The last 15 minutes of the controller's measures, for the operators' status page: a capped
Redis list the controller appends to each tick (newest first), so any API process can draw it
and a new leader carries it on."""

import time

import orjson

from leadflow.redis_conn import get_redis
from leadflow.redis_keys import CONTROL_HISTORY_KEY

HISTORY_SECONDS = 15 * 60
# One sample a tick (1 s); a little more than the window, so a slow tick never shortens it.
HISTORY_SAMPLES = HISTORY_SECONDS + 60


def history_append(
    now: float,
    measures: dict,
    mode: str,
    arrivals: dict | None = None,
    forecasts: dict | None = None,
) -> None:
    """Record one tick: the mode, and each tier's backlog (of which in flight), lag, drain
    rate, arrival rate (the last forecast step's) and the arrival rate forecast 5 minutes
    ahead."""
    pipe = get_redis().pipeline(transaction=True)
    history_write(pipe, now, measures, mode, arrivals, forecasts)
    pipe.execute()


def history_write(
    pipe, now: float, measures: dict, mode: str, arrivals: dict | None = None, forecasts=None
) -> None:
    """Queue history_append's writes on `pipe` (the controller's one transaction a tick)."""
    arrivals, forecasts = arrivals or {}, forecasts or {}
    sample = {
        "at": round(now, 3),
        "mode": str(mode),
        "tiers": {
            tier: {
                "backlog": m.backlog,
                "inflight": m.inflight,
                "lag": round(m.lag_seconds, 3),
                "drain": round(m.drain_rate, 3),
                "arrivals": round(arrivals.get(tier, 0.0), 3),
                "forecast_5m": round(forecasts[tier].rates["5m"], 3) if tier in forecasts else 0.0,
            }
            for tier, m in measures.items()
        },
    }
    pipe.lpush(CONTROL_HISTORY_KEY, orjson.dumps(sample))
    pipe.ltrim(CONTROL_HISTORY_KEY, 0, HISTORY_SAMPLES - 1)


def history_read(seconds: float = HISTORY_SECONDS) -> list[dict]:
    """The samples of the last `seconds`, oldest first."""
    since = time.time() - seconds
    samples = [
        orjson.loads(raw) for raw in get_redis().lrange(CONTROL_HISTORY_KEY, 0, HISTORY_SAMPLES)
    ]
    return [sample for sample in reversed(samples) if sample["at"] >= since]
