"""The process's Redis client. One connection pool per process, rebuilt after fork."""

import os
import threading
from pathlib import Path

import redis
from django.conf import settings
from redis.commands.core import Script
from redis.exceptions import NoScriptError

_client: redis.Redis | None = None
_client_pid: int | None = None
_scripts: dict[tuple[Path, ...], Script] = {}


def get_redis() -> redis.Redis:
    """A client with decode_responses=False: payloads are bytes, callers decode what they need."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30)
        _client_pid = os.getpid()
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
    told "duplicate" with the first trace id, which is the truth.
    """
    conn = getattr(_hot, "conn", None)
    if conn is None or getattr(_hot, "pid", None) != os.getpid():
        conn = _hot.conn = get_redis().connection_pool.make_connection()
        _hot.pid = os.getpid()
    try:
        return _evalsha(conn, script, keys, args)
    except NoScriptError:  # Redis restarted without its script cache
        get_redis().script_load(script.script)
    except (redis.ConnectionError, redis.TimeoutError):
        conn.disconnect()  # the next command connects again
    return _evalsha(conn, script, keys, args)


def _evalsha(conn, script: Script, keys: list, args: list):
    conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
    return conn.read_response()
