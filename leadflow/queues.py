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


# A stage message carries at most this many trace ids (the size of a pool A batch).
LEADS_PER_MESSAGE_MAX = 500


def send_in_batches(task, pool: str, tier: str, trace_ids: list[str]) -> None:
    """Enqueue `task` for the leads on the pool's queue of their tier, a bounded batch a message."""
    for start in range(0, len(trace_ids), LEADS_PER_MESSAGE_MAX):
        batch = trace_ids[start : start + LEADS_PER_MESSAGE_MAX]
        task.apply_async(args=[batch, tier], queue=queue_name(pool, tier))
