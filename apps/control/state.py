"""The controller's published state, read by every process: the mode (for the intake's
answers), the Shedding (for the dispatcher and the pools), and the autoscalers' figures."""

import time

from apps.control.modes import Shedding
from leadflow import redis_keys
from leadflow.redis_conn import cluster_enabled, get_inbox_redis, get_redis
from leadflow.redis_keys import CONTROL_STATE_KEY

# What autoscalers read (GET /scaling/backlog, KEDA's metrics-api scaler), "<pool>.<tier>" ->
# leads for pool A waiting in the inboxes or in flight, or messages in b.* / c.*. Frozen by
# stop-scaling.
# A worker reads the state at most this often: a change reaches every process within about
# a second of the controller's tick (the policy page promises 2 s).
_READ_EVERY_SECONDS = 0.5

_cached: tuple[float, Shedding] | None = None


def shedding_publish(shedding: Shedding) -> None:
    """Publish a Shedding on its own (tests, a shell); the controller uses shedding_write."""
    pipe = get_redis().pipeline(transaction=True)
    shedding_write(pipe, shedding)
    pipe.execute()


def shedding_write(pipe, shedding: Shedding) -> None:
    """Queue the Shedding's publication on `pipe` (the controller's one transaction a tick)."""
    pipe.hset(CONTROL_STATE_KEY, mapping=shedding.as_redis())
    pipe.set(redis_keys.MODE_KEY, shedding.mode)
    # Admission reads the mode from its shard's copy: in the same transaction, unless the
    # inboxes are on a Redis Cluster (then written at once, unfenced, on its own).
    copies = pipe if not cluster_enabled() else get_inbox_redis().pipeline(transaction=False)
    for shard in redis_keys.shards():
        copies.hset(redis_keys.shard_key(shard), "mode", shedding.mode)
    if copies is not pipe:
        copies.execute()


def shedding_current() -> Shedding:
    """What runs now; the default (everything) until a controller has published."""
    global _cached
    now = time.monotonic()
    if _cached is None or now - _cached[0] > _READ_EVERY_SECONDS:
        _cached = (now, Shedding.from_redis(get_redis().hgetall(CONTROL_STATE_KEY)))
    return _cached[1]
