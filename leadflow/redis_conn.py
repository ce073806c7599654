"""The process's Redis client. One connection pool per process, rebuilt after fork.

Two clients. get_redis(): REDIS_URL, everything but the inboxes (the control lease and state,
tenants, breakers; the Celery broker by default). get_inbox_redis(): the inboxes and the
admission state (every key admit.lua and claim.lua touch, leadflow/redis_keys.py), on a Redis
Cluster when REDIS_CLUSTER_URL (LEADFLOW_REDIS_CLUSTER_URL) names one of its nodes, the keys in
shards of one hash tag each; otherwise the same client as get_redis(). kombu does not support
Redis Cluster: the broker stays on a plain Redis.

Every call is bounded (settings REDIS_*_TIMEOUT_SECONDS): a Redis that is down or stalled
raises redis.ConnectionError / TimeoutError instead of holding the caller. The API process
(leadflow/wsgi.py calls api_timeouts_use) bounds them tighter and does not back off and retry,
so that its clients get a 503 within the timeout (README "Outages").
"""

import os
import threading
from pathlib import Path

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from leadflow.replica_wait import evalsha_then_wait

_client: redis.Redis | None = None
_client_key: tuple | None = None
_cluster: RedisCluster | None = None
_cluster_key: tuple | None = None
_scripts: dict[tuple, Script] = {}
_api_timeouts = False


def api_timeouts_use() -> None:
    """This process answers HTTP requests: the API's short timeouts from now on."""
    global _api_timeouts
    _api_timeouts = True


def cluster_enabled() -> bool:
    """The inboxes are on a Redis Cluster (a script reaches only its own slot)."""
    return bool(settings.REDIS_CLUSTER_URL)


def _timeouts() -> tuple[float, float]:
    if _api_timeouts:
        return settings.API_REDIS_CONNECT_TIMEOUT_SECONDS, settings.API_REDIS_TIMEOUT_SECONDS
    return settings.REDIS_CONNECT_TIMEOUT_SECONDS, settings.REDIS_TIMEOUT_SECONDS


def _client_new(url: str) -> redis.Redis:
    if not _api_timeouts:
        # redis-py's default retries (with backoff) ride out a blip for the workers and control.
        return redis.Redis.from_url(
            url,
            health_check_interval=30,
            socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT_SECONDS,
            socket_timeout=settings.REDIS_TIMEOUT_SECONDS,
        )
    return redis.Redis.from_url(
        url,
        health_check_interval=30,
        socket_connect_timeout=settings.API_REDIS_CONNECT_TIMEOUT_SECONDS,
        socket_timeout=settings.API_REDIS_TIMEOUT_SECONDS,
        # One more try, at once, only for a dropped connection (a pooled one that a restart of
        # Redis closed): a Redis that is down refuses both at once; one that is stalled times
        # out once. redis-py's default (10 tries, backing off up to 1 s) would hold a client
        # for seconds.
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
    )


def get_redis() -> redis.Redis:
    """A client with decode_responses=False: payloads are bytes, callers decode what they need."""
    global _client, _client_key
    key = (os.getpid(), settings.REDIS_URL, _api_timeouts)
    if _client is None or _client_key != key:
        _client = _client_new(settings.REDIS_URL)
        _client_key = key
        _scripts.clear()  # scripts are bound to the client they were registered with
    return _client


def get_inbox_redis() -> redis.Redis | RedisCluster:
    """The inboxes' client: the Redis Cluster's (REDIS_CLUSTER_URL), else get_redis()."""
    global _cluster, _cluster_key
    if not settings.REDIS_CLUSTER_URL:
        return get_redis()
    key = (os.getpid(), settings.REDIS_CLUSTER_URL, _api_timeouts)
    if _cluster is None or _cluster_key != key:
        connect_timeout, timeout = _timeouts()
        _cluster = RedisCluster.from_url(
            settings.REDIS_CLUSTER_URL,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
        )
        _cluster_key = key
        _scripts.clear()
    return _cluster


def lua_script(path: Path, *includes: Path, inbox: bool = False) -> Script:
    """The Lua script in `path`, with `includes` (shared local functions) put ahead of it;
    with `inbox`, registered with the inboxes' client (get_inbox_redis).

    Read once per process; redis-py runs it by EVALSHA.
    """
    client = get_inbox_redis() if inbox else get_redis()
    parts = (*includes, path, id(client))
    script = _scripts.get(parts)
    if script is None:
        source = "\n".join(part.read_text() for part in (*includes, path))
        script = _scripts[parts] = client.register_script(source)
    return script


_hot = threading.local()
# redis-py packs commands with hiredis when it is installed: _evalsha packs the same bytes.
_hiredis_pack = None
if HIREDIS_AVAILABLE:
    from hiredis import pack_command as _hiredis_pack


def script_run_hot(script: Script, keys: list, args: list):
    """Run a registered script on a connection kept by this thread, for the intake's hot path.

    The same EVALSHA as `script(keys=..., args=...)`, without the pool's checkout, health
    check and retry wrapper around every call, which cost a good part of a request's CPU.
    A dropped connection (or a Redis that lost its scripts) gets one more try. If the first
    try ran but its reply was lost, the second meets the first's dedup keys: the client is
    told "duplicate" with the first trace id, which is the truth. A timeout is not tried again.
    """
    client = get_inbox_redis()
    if isinstance(client, RedisCluster):  # routed to the node of the keys' slot
        return script(keys=keys, args=args, client=client)
    conn = getattr(_hot, "conn", None)
    if conn is None or getattr(_hot, "key", None) != _client_key:  # new process, URL or timeouts
        conn = _hot.conn = client.connection_pool.make_connection()
        _hot.key = _client_key
    try:
        return _evalsha(conn, script, keys, args)
    except NoScriptError:  # Redis restarted without its script cache
        client.script_load(script.script)
    except redis.ConnectionError:
        conn.disconnect()  # closed by a restart of Redis: the next command connects again
    except redis.TimeoutError:
        conn.disconnect()  # a late reply must never be read as the next command's
        raise  # a stalled Redis: answered now, not after a second timeout
    return _evalsha(conn, script, keys, args)


def _evalsha(conn, script: Script, keys: list, args: list):
    if settings.ADMIT_WAIT_REPLICAS:  # the 202 waits for replicas (leadflow/replica_wait.py)
        return evalsha_then_wait(conn, script.sha, keys, args)
    if _hiredis_pack is not None:
        # What redis-py's hiredis packer ends with, without its pass over every argument for
        # bytearray and memoryview (none here: str, bytes, int, float), which cost more than
        # the packing itself: ~6 arguments a lead, 3,000 for a batch of 500.
        conn.send_packed_command([_hiredis_pack(("EVALSHA", script.sha, len(keys), *keys, *args))])
    else:
        conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
    return conn.read_response()
