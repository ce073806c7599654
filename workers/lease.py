"""Leases on the messages a worker holds, so a killed worker's batch is handed out again within
seconds, never while it still runs.

kombu's Redis transport records every message a worker takes in a sorted set (`unacked_index`,
scored with the time it was taken) and hands it out again once it is older than the visibility
timeout. With a fixed timeout that is a bad bargain: long enough for the slowest batch means a
killed worker's batch waits minutes; short means a slow batch runs twice. Here each worker
renews the score of every message it holds (running, waiting for a pool slot, or held for a
retry countdown) every LEADFLOW_LEASE_RENEW_SECONDS, so the visibility timeout only has to
outlast a few missed renewals: a worker killed by SIGKILL stops renewing, and its messages come
back within the visibility timeout (25 s by default) plus kombu's restore interval (5 s). This is
Sidekiq Pro's super_fetch idea (a heartbeat per process; orphans re-queued when it lapses) on
kombu's own bookkeeping.
"""

import logging
import threading
import time

import redis
from celery import signals
from celery.worker import state

log = logging.getLogger(__name__)

UNACKED_INDEX_KEY = "unacked_index"  # kombu.transport.redis.Channel.unacked_index_key


def held_delivery_tags() -> set[str]:
    """Delivery tags of the messages this worker process holds now."""
    tags = set()
    for requests in (state.reserved_requests, state.active_requests, state.scheduled_requests):
        # WeakSets the consumer changes from its own thread: retried on a concurrent change.
        for _ in range(3):
            try:
                held = list(requests)
                break
            except RuntimeError:
                continue
        else:
            held = []
        for request in held:
            tag = getattr(request.message, "delivery_tag", None)
            if tag:
                tags.add(tag)
    return tags


def leases_renew(client: redis.Redis, key: str, tags: set[str], now: float) -> int:
    """Move the messages' scores to now (only those kombu still records as unacked)."""
    if not tags:
        return 0
    return client.zadd(key, dict.fromkeys(tags, now), xx=True, ch=True)


class LeaseRenewer(threading.Thread):
    def __init__(self, broker_url: str, key: str, every_seconds: float) -> None:
        super().__init__(name="lease-renewer", daemon=True)
        self.client = redis.Redis.from_url(
            broker_url, socket_timeout=every_seconds, socket_connect_timeout=every_seconds
        )
        self.key, self.every_seconds = key, every_seconds

    def run(self) -> None:
        while True:
            time.sleep(self.every_seconds)
            try:
                leases_renew(self.client, self.key, held_delivery_tags(), time.time())
            except redis.RedisError as error:  # Redis away: kombu cannot restore either
                log.warning("leases not renewed: %r", error)
            except Exception:  # the renewer must outlive anything a pass meets
                log.exception("leases not renewed")


@signals.worker_ready.connect
def _leases_start(sender=None, **kwargs) -> None:
    # The worker's main process: it holds the messages, whichever pool runs the tasks.
    from django.conf import settings

    options = sender.app.conf.broker_transport_options or {}
    visibility = float(options.get("visibility_timeout", 3600))
    every = settings.LEASE_RENEW_SECONDS
    if visibility < 3 * every:
        log.error(
            "CELERY_VISIBILITY_TIMEOUT (%ss) is under 3 x LEADFLOW_LEASE_RENEW_SECONDS (%ss): "
            "a batch still running may be handed out again after a missed renewal",
            visibility,
            every,
        )
    LeaseRenewer(
        sender.app.conf.broker_url, options.get("unacked_index_key", UNACKED_INDEX_KEY), every
    ).start()
