"""Queue names, one place. Import-light: used by the API, the dispatcher and the workers.

Each pool consumes its three queues in this order, and the broker's "priority" strategy
makes that order strict.
"""

from kombu import Queue

TIERS = ("critical", "normal", "low")
POOLS = ("a", "b", "c")


def queue_name(pool: str, tier: str) -> str:
    if pool not in POOLS or tier not in TIERS:
        raise ValueError(f"no queue for pool={pool!r} tier={tier!r}")
    return f"{pool}.{tier}"


def pool_queues(pool: str) -> list[str]:
    return [queue_name(pool, tier) for tier in TIERS]


TASK_QUEUES = [Queue(queue_name(pool, tier)) for pool in POOLS for tier in TIERS]
