"""The process's Redis client. One connection pool per process, rebuilt after fork."""

import os
from pathlib import Path

import redis
from django.conf import settings
from redis.commands.core import Script

_client: redis.Redis | None = None
_client_pid: int | None = None
_scripts: dict[Path, Script] = {}


def get_redis() -> redis.Redis:
    """A client with decode_responses=False: payloads are bytes, callers decode what they need."""
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30)
        _client_pid = os.getpid()
        _scripts.clear()  # scripts are bound to the client they were registered with
    return _client


def lua_script(path: Path) -> Script:
    """The Lua script in `path`, read once per process; redis-py runs it by EVALSHA."""
    client = get_redis()
    script = _scripts.get(path)
    if script is None:
        script = _scripts[path] = client.register_script(path.read_text())
    return script
