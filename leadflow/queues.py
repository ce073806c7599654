"""The pipeline's tiers and its queue names, one place. Import-light (Django's enum and kombu's
Queue only): the API, the dispatcher, the Celery app and the pools all read them here.

A lead's tier is defined once, as `Tier` (the lead's model field takes its choices from it), and
every queue name is derived from it: pool × tier. Each pool consumes its three queues in the
order of `TIERS`, and the broker's "priority" strategy makes that order strict.
"""

from django.db.models import TextChoices
from kombu import Queue


class Tier(TextChoices):
    """A lead's priority: its inbox, its queues and its place in the dispatcher's order."""

    CRITICAL = "critical"
    NORMAL = "normal"
    LOW = "low"


TIERS: tuple[str, ...] = tuple(Tier.values)  # most urgent first
POOLS = ("a", "b", "c")  # a: qualification (apps.leads), b: enrichment, c: crm + reports


def queue_name(pool: str, tier: str) -> str:
    if pool not in POOLS or tier not in TIERS:
        raise ValueError(f"no queue for pool={pool!r} tier={tier!r}")
    return f"{pool}.{tier}"


def pool_queues(pool: str) -> list[str]:
    return [queue_name(pool, tier) for tier in TIERS]


TASK_QUEUES = [Queue(queue_name(pool, tier)) for pool in POOLS for tier in TIERS]


# A stage message carries at most this many trace ids (the size of a pool A batch).
LEADS_PER_MESSAGE_MAX = 500
