"""The process's Redis client. One connection pool per process, rebuilt after fork.

With REDIS_CLUSTER (LEADFLOW_REDIS_CLUSTER=true), REDIS_URL names one node of a Redis Cluster
and the client is redis-py's RedisCluster: the inboxes and admission state live there, their
keys in shards of one hash tag each (leadflow/redis_keys.py); the Celery broker stays on its own
plain Redis (CELERY_BROKER_URL: kombu does not support Redis Cluster).

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

from leadflow.replica_wait import evalsha_then_wait

_client: redis.Redis | None = None
_client_key: tuple | None = None
_scripts: dict[tuple[Path, ...], Script] = {}
_api_timeouts = False


def api_timeouts_use() -> None:
    """This process answers HTTP requests: the API's short timeouts from now on."""
    global _api_timeouts
    _api_timeouts = True


def cluster_enabled() -> bool:
    """The inboxes are on a Redis Cluster (a script reaches only its own slot)."""
    return settings.REDIS_CLUSTER


def _client_new(url: str) -> redis.Redis:
    if settings.REDIS_CLUSTER:
        timeouts = (
            (settings.API_REDIS_CONNECT_TIMEOUT_SECONDS, settings.API_REDIS_TIMEOUT_SECONDS)
            if _api_timeouts
            else (settings.REDIS_CONNECT_TIMEOUT_SECONDS, settings.REDIS_TIMEOUT_SECONDS)
        )
        return RedisCluster.from_url(
            url, socket_connect_timeout=timeouts[0], socket_timeout=timeouts[1]
        )
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
    key = (os.getpid(), settings.REDIS_URL, settings.REDIS_CLUSTER, _api_timeouts)
    if _client is None or _client_key != key:
        _client = _client_new(settings.REDIS_URL)
        _client_key = key
        _scripts.clear()  # scripts are bound to the client they were registered with
    return _client


def lua_script(path: Path, *includes: Path) -> Script:
    """The Lua script in `path`, with `includes` (shared local functions) put ahead of it.

    Read once per process; redis-py runs it by EVALSHA.
    """
    client = get_redis()
    parts = (*includes, path)
    script = _scripts.get(parts)
    if script is None:
        source = "\n".join(part.read_text() for part in parts)
        script = _scripts[parts] = client.register_script(source)
    return script


_hot = threading.local()


def script_run_hot(script: Script, keys: list, args: list):
    """Run a registered script on a connection kept by this thread, for the intake's hot path.

    The same EVALSHA as `script(keys=..., args=...)`, without the pool's checkout, health
    check and retry wrapper around every call, which cost a good part of a request's CPU.
    A dropped connection (or a Redis that lost its scripts) gets one more try. If the first
    try ran but its reply was lost, the second meets the first's dedup keys: the client is
    told "duplicate" with the first trace id, which is the truth. A timeout is not tried again.
    """
    client = get_redis()
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
    conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
    return conn.read_response()
