"""When each API key was last used, kept without a write per request.

A request only notes the time in this process's memory (`key_used`: a dict assignment). The
tenant cache's listener thread (apps/tenants/cache.py), which wakes every second anyway, moves
the notes to a Redis hash (`flush`), and every API_KEY_LAST_USED_WRITE_SECONDS one process of
the whole deployment (the one that takes a Redis lock) writes the hash to PostgreSQL in one
UPDATE that fires no signal (so no cache is dropped). PostgreSQL sees one statement a minute
whatever the traffic, and a key's `last_used_at` is at most that interval behind.

Nothing here may fail a request or stop the listener: a Redis or PostgreSQL error is logged and
the times wait for the next round (a lost note only makes `last_used_at` a little older).
"""

import logging
import os
import threading
import time

import redis
from django.conf import settings
from django.db import connection

from leadflow.redis_conn import get_redis
from leadflow.redis_keys import KEYS_LAST_USED_KEY, KEYS_LAST_USED_WRITER_KEY

log = logging.getLogger(__name__)


_noted: dict[int, float] = {}  # key id -> epoch seconds, since the last flush
_next_write = 0.0  # monotonic: when this process next tries to write PostgreSQL
_lock = threading.Lock()


def key_used(key_id: int) -> None:
    """Called by the request that authenticated with the key: no I/O."""
    if key_id:
        _noted[key_id] = time.time()


def flush() -> None:
    """Move this process's notes to Redis; write Redis's to PostgreSQL when it is time."""
    global _next_write
    try:
        _notes_to_redis()
        now = time.monotonic()
        if now >= _next_write:
            _next_write = now + settings.API_KEY_LAST_USED_WRITE_SECONDS
            last_used_write()
    except Exception as error:  # noqa: BLE001 - the listener must go on whatever happens here
        log.warning("api key usage: not recorded this round: %s: %s", type(error).__name__, error)


def _notes_to_redis() -> None:
    with _lock:
        if not _noted:
            return
        notes = dict(_noted)
        _noted.clear()
    try:
        get_redis().hset(KEYS_LAST_USED_KEY, mapping=notes)
    except redis.RedisError:
        with _lock:  # kept for the next round, unless a newer note came meanwhile
            for key_id, at in notes.items():
                _noted[key_id] = max(at, _noted.get(key_id, 0.0))
        raise


def last_used_write() -> int:
    """If no other process did in the last interval: take the times Redis holds and write them
    to PostgreSQL. Returns how many keys were written."""
    from apps.tenants.services import api_keys_last_used_record

    client = get_redis()
    interval = max(int(settings.API_KEY_LAST_USED_WRITE_SECONDS), 1)
    if not client.set(KEYS_LAST_USED_WRITER_KEY, os.getpid(), nx=True, ex=interval):
        return 0
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(KEYS_LAST_USED_KEY)
    pipe.delete(KEYS_LAST_USED_KEY)
    raw, _ = pipe.execute()
    times = {int(key_id): float(at) for key_id, at in raw.items()}
    if not times:
        return 0
    try:
        # This thread's own connection, closed after use: it writes once an interval at most.
        written = api_keys_last_used_record(times)
    except Exception:
        # Back for the next round, unless a request noted a newer time meanwhile.
        pipe = client.pipeline(transaction=False)
        for key_id, at in times.items():
            pipe.hsetnx(KEYS_LAST_USED_KEY, key_id, at)
        pipe.execute()
        raise
    finally:
        if not connection.in_atomic_block:  # a caller's transaction (a test's) is left alone
            connection.close()
    return written
