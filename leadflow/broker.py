"""kombu's Redis transport, made to ride out what an outage does to a worker. It is registered
as `redis://` itself (leadflow/celery.py imports this module before any connection is made), so
broker URLs keep their scheme for everything that reads them (Flower's broker page, the
Redis checks). Rehearsed with `make chaos` (README "Outages"), kombu 5.7 as shipped:

- **Redis killed.** The consumer closes its connection; closing the channel restores the
  messages it holds, and that builds a new connection pool from a connection already closed:
  `AttributeError: 'NoneType' object has no attribute 'hostname'`, which no one catches, so the
  worker exits. Here a closed connection is a connection error, which Celery answers by
  reconnecting; the messages stay recorded in Redis and come back when their lease lapses.
- **Redis full** (maxmemory, noeviction: every write that may grow memory is refused).
  BRPOP still pops a message, and recording it as unacked is refused: the message then lives
  only in the worker's memory, and the error reached the worker's loop and stopped it. Here the
  worker keeps the message and records it as soon as Redis takes it (nothing else can move
  while Redis refuses writes: every stage hands its work on through Redis). Requeueing a message
  (a retry that could not be published) and restoring expired leases are refused too; those
  messages stay recorded as unacked and are handed out again once Redis has room.
"""

import base64
import json
import logging
import time

import redis
from celery.worker import state as worker_state
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

UNACKED_KEY = "unacked"  # kombu's Channel.unacked_key: delivery tag -> [message, exchange, queue]
RECORD_RETRY_SECONDS = 0.5
# Refusals that pass when Redis has room or is back; a message is held until then.
RECORD_REFUSED = (
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class Client(redis.Redis):
    def pipeline(self, transaction=False, shard_hint=None):
        # kombu batches its commands in MULTI where nothing needs them atomic (queue sizes,
        # acks, bindings), and Redis refuses every command queued in a MULTI when it is full,
        # reads and deletes included: a worker could then neither declare its queues nor ack.
        # Plain pipelines here; client.transaction() (kombu's restores) stays atomic.
        return super().pipeline(transaction, shard_hint)


class BrokerConnectionClosed(redis.exceptions.ConnectionError):
    """The kombu connection a channel belonged to was closed: Celery reconnects."""


class QoS(kombu_redis.QoS):
    def append(self, message, delivery_tag):
        """Record a message as unacked before it runs, however long Redis refuses it."""
        refused_since = None
        while True:
            try:
                super().append(message, delivery_tag)
            except BrokerConnectionClosed:
                raise
            except RECORD_REFUSED as error:
                if worker_state.should_stop is not None or worker_state.should_terminate:
                    raise  # stopping: kept in memory only, as a SIGKILL would leave it
                if refused_since is None:
                    refused_since = time.monotonic()
                    log.warning(
                        "message %s taken but not recorded (%r): held until Redis takes it",
                        delivery_tag,
                        error,
                    )
                time.sleep(RECORD_RETRY_SECONDS)
            else:
                break
        if refused_since is not None:
            log.warning(
                "message %s recorded after %.1f s", delivery_tag, time.monotonic() - refused_since
            )

    def reject(self, delivery_tag, requeue=False):
        try:
            return super().reject(delivery_tag, requeue=requeue)
        except redis.exceptions.OutOfMemoryError:
            if not requeue:
                raise
            # The requeue was one transaction, refused whole: the message is still recorded as
            # unacked, no one renews it now, so it comes back once Redis has room.
            log.warning("message %s not requeued (Redis full): its lease will lapse", delivery_tag)
            virtual.QoS.ack(self, delivery_tag)  # forget it locally only

    def restore_visible(self, start=0, num=10, interval=10):
        try:
            return super().restore_visible(start, num, interval)
        except redis.exceptions.OutOfMemoryError:
            log.warning("expired leases not restored (Redis full); tried again shortly")


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _get_client(self):
        client = super()._get_client()
        return Client if client is redis.Redis else client

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        # Every (re)connect declares its queues again: a SADD of members already there (or a
        # script refreshing a binding's TTL), which Redis refuses when full all the same. A
        # binding that exists needs no write now.
        try:
            return super()._queue_bind(exchange, routing_key, pattern, queue)
        except redis.exceptions.ResponseError:
            member = self.sep.join([routing_key or "", pattern or "", queue or ""])
            with self.conn_or_acquire() as client:
                if not client.sismember(self.keyprefix_queue % (exchange,), member):
                    raise

    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise BrokerConnectionClosed("the broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel


def trace_ids_carried(client: redis.Redis, queues: list[str], tasks: frozenset[str]) -> set[str]:
    """The trace ids (first argument) of the `tasks` messages in `queues`: waiting there, or
    taken by a worker and not yet acked (running, held for a countdown, or left by a worker
    that died, until restored). One round trip; only these queues' messages are decoded."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.lrange(queue, 0, -1)
        pipe.hvals(UNACKED_KEY)
        *waiting, unacked = pipe.execute()
    wanted = {queue.encode() for queue in queues}
    messages = [json.loads(raw) for raw_list in waiting for raw in raw_list]
    for value in unacked:
        # [message, exchange, routing key]: the queue is read from the tail, so the (possibly
        # large) messages of other pools are never parsed.
        if value[value.rfind(b",") + 1 : -1].strip().strip(b'"') in wanted:
            messages.append(json.loads(value)[0])
    carried: set[str] = set()
    for message in messages:
        if message.get("headers", {}).get("task") not in tasks:
            continue
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        if args and isinstance(args[0], list):
            carried.update(args[0])
    return carried


TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
