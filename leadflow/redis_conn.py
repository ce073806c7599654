"""The process's Redis client. One connection pool per process, rebuilt after fork."""

import os
from pathlib import Path

import redis
from django.conf import settings
from redis.commands.core import Script

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
