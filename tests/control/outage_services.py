"""What the control process's outage tests (tests/outage/test_control_*) run on: a PostgreSQL
database of their own, and real processes (the API, control) kept running as compose or
Kubernetes would: restarted when they exit, the restarts counted. With a private redis-server
(tests/doubles/redis_server.py) and a TCP proxy in front of PostgreSQL (tests/doubles/tcp_proxy.py),
nothing is shared with the live stack (tests/live/stack.py) or other tests: the database, the
Redis server and so the leader lease are the test's alone.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import redis

from leadflow import redis_keys
from tests.live.api import auth, wait_until
from tests.live.stack import ROOT, _die_with_parent, free_port

LEASE_SECONDS = 5.0  # run_control's leader lease; a freeze or stall longer than it is the test


@dataclass
class Supervised:
    """A process restarted whenever it exits (after a second), as a restart policy would."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    exits: list[int] = field(default_factory=list)
    popen: subprocess.Popen | None = None
    _stopping: bool = False

    def start(self) -> "Supervised":
        self._spawn()
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def _watch(self) -> None:
        while not self._stopping:
            code = self.popen.poll()
            if code is not None and not self._stopping:
                self.exits.append(code)
                with self.log_path.open("ab") as log:
                    log.write(f"\n[test supervisor: {self.name} exited {code}]\n".encode())
                time.sleep(1.0)
                if not self._stopping:
                    self._spawn()
            time.sleep(0.2)

    @property
    def restarts(self) -> int:
        return len(self.exits)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, text: str, timeout: float = 90.0, count: int = 1) -> None:
        wait_until(
            lambda: self.log().count(text) >= count,
            timeout=timeout,
            interval=0.2,
            message=f"{self.name}: no {text!r} (x{count}) in its log:\n{self.log()[-4000:]}",
        )

    def signal(self, signum: int) -> None:
        os.killpg(self.popen.pid, signum)

    def stop(self) -> None:
        self._stopping = True
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGCONT)  # a frozen process cannot take SIGTERM
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)


def database_url_for(name: str, port: int | None = None) -> str:
    """DATABASE_URL's server, with another database name (and port, for the proxy)."""
    parts = urlsplit(os.environ["DATABASE_URL"])
    netloc = parts.netloc
    if port is not None:
        netloc = f"{netloc.rsplit('@', 1)[0]}@{parts.hostname}:{port}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{name}"))


@contextlib.contextmanager
def private_database():
    """A fresh, migrated database of the test's own; dropped afterwards. Yields its URL."""
    name = f"{urlsplit(os.environ['DATABASE_URL']).path.lstrip('/')}_outage_{uuid.uuid4().hex[:8]}"
    admin_url = database_url_for("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url_for(name)
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": url},
            check=True,
            timeout=300,
        )
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def tenant_key(env: dict[str, str]) -> str:
    """A new tenant in env's database; its API key (create_tenant prints it last)."""
    done = subprocess.run(
        [sys.executable, "manage.py", "create_tenant", f"outage-{uuid.uuid4().hex[:8]}"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout.strip().splitlines()[-1]


def process_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PYTHONUNBUFFERED": "1",
        "LEADFLOW_CONTROL_METRICS_PORT": "0",  # no metrics server: ports stay free
        # The private Redis has the AOF and noeviction; CI's shared one may not.
        "LEADFLOW_REDIS_CHECKS": "warn",
        **extra,
    }
    env.pop("CELERY_BROKER_URL", None)
    return env


def start_api(env: dict[str, str], log_dir: Path) -> tuple[Supervised, str]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "leadflow.wsgi",
        "-c",
        "gunicorn.conf.py",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "1",
        "--no-control-socket",
    ]
    api = Supervised("api", argv, env, log_dir / "api.log").start()
    api.wait_for("Booting worker")
    return api, f"http://127.0.0.1:{port}"


def start_control(env: dict[str, str], log_dir: Path, name: str = "control") -> Supervised:
    argv = [sys.executable, "manage.py", "run_control"]
    return Supervised(name, argv, env, log_dir / f"{name}.log").start()


def post_leads(api_url: str, key: str, count: int, timeout: float = 60.0) -> list[str]:
    """Post `count` normal leads in one batch, retrying while the API answers 503 (its Redis
    coming back); their trace ids."""
    body = {
        "leads": [
            {"email": f"{uuid.uuid4().hex[:12]}@example.com", "priority": "normal"}
            for _ in range(count)
        ]
    }
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.post(
                f"{api_url}/api/v1/leads/batch", json=body, headers=auth(key), timeout=10
            )
            if response.status_code == 202:
                return [answer["trace_id"] for answer in response.json()["results"]]
            last = f"{response.status_code} {response.text[:300]}"
        except httpx.TransportError as error:
            last = repr(error)
        if time.monotonic() > deadline:
            raise AssertionError(f"the API did not accept the leads: {last}")
        time.sleep(0.5)


def tier_counts(client: redis.Redis, tier: str = "normal") -> tuple[int, int]:
    """(leads waiting in the tier's inboxes, leads in flight): what the dispatcher moved."""
    counts = [
        client.hmget(redis_keys.shard_key(shard), [tier, f"inflight:{tier}"])
        for shard in redis_keys.shards()
    ]
    return sum(int(w or 0) for w, _ in counts), sum(int(i or 0) for _, i in counts)


def wait_dispatched(client: redis.Redis, inflight: int, timeout: float = 60.0) -> None:
    """Until no normal lead waits and `inflight` are in flight (claimed and sent to pool A)."""
    wait_until(
        lambda: tier_counts(client) == (0, inflight),
        timeout=timeout,
        interval=0.2,
        message=f"(waiting, in flight) is {tier_counts(client)}, wanted (0, {inflight})",
    )
