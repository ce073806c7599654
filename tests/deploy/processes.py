"""Real processes for the deploy tests: started from the Procfile's own commands, each in its
own session (killed with its whole group at the end), with a log file to read.

Workers run a slow test task (tests/live/slow_tasks.py) on a queue of the test's own, with
LeadFlow's Celery settings (acks_late, reject_on_worker_lost, prefetch 1).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kombu import Queue

from leadflow.redis_conn import get_redis
from tests.deploy.procfile import argv_with_defaults, procfile, with_option
from tests.live.slow_tasks import slow_batch
from tests.live.stack import ROOT, _die_with_parent

SUPERVISE = [sys.executable, str(ROOT / "leadflow" / "supervise.py")]


@dataclass
class Started:
    popen: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} (x{count}) in the log:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def sigterm(self) -> None:
        """What Kubernetes and docker do: SIGTERM to the main process only."""
        self.popen.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


class Starter:
    """Starts processes for one test and kills what is left of them at its end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Started] = []

    def __call__(self, argv: list[str], env: dict[str, str], name: str) -> Started:
        log_path = self.log_dir / f"{name}-{len(self.started)}.log"
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.started.append(Started(popen, log_path))
        return self.started[-1]

    def stop_all(self) -> None:
        for process in self.started:
            process.stop()


def pid_alive(pid: int) -> bool:
    """True while the process runs (a zombie waiting for its reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in status


# --- Celery workers ---


def worker_argv(pool: str, queue: str, concurrency: int = 1) -> list[str]:
    """The Procfile's pool command, on the slow-task app and the test's queue."""
    argv = argv_with_defaults(procfile()[f"pool-{pool}"])
    assert argv[:4] == ["celery", "-A", "leadflow", "worker"]
    argv = [sys.executable, "-m", "celery", "-A", "tests.live.slow_tasks", *argv[3:]]
    argv = with_option(argv, "-n", f"{queue}@%h")
    argv = with_option(argv, "-c", str(concurrency))
    return with_option(argv, "-Q", queue)


def worker_env(queue: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "LEADFLOW_TEST_QUEUE": queue, "PYTHONUNBUFFERED": "1", **extra}
    for name in ("REMAP_SIGTERM", "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT"):
        if name not in extra:
            env.pop(name, None)
    # The pools' metrics ports are the live stack's or `make run`'s: these workers serve none.
    for pool in ("A", "B", "C"):
        env.setdefault(f"LEADFLOW_POOL_{pool}_METRICS_PORT", "0")
    return env


def pool_a_env(queue: str, soft_shutdown_seconds: float) -> dict[str, str]:
    """Pool A's shutdown settings in docker-compose.yml and deploy/k8s/pool-a.yaml."""
    return worker_env(
        queue,
        REMAP_SIGTERM="SIGQUIT",
        CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT=str(soft_shutdown_seconds),
    )


def send_slow_batch(queue: str, seconds: float) -> str:
    key = f"lf:test:{uuid.uuid4().hex}"
    slow_batch.apply_async(args=[key, seconds], queue=Queue(queue))
    return key


def runs(key: str) -> tuple[int, int]:
    """(started, finished) runs of the slow batch."""
    client = get_redis()
    return client.llen(f"{key}:started"), client.llen(f"{key}:done")


def run_pids(key: str) -> list[int]:
    """The worker processes that finished a run of the slow batch."""
    return [int(pid) for pid in get_redis().lrange(f"{key}:done", 0, -1)]


def wait_started(key: str, runs_started: int = 1, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while runs(key)[0] < runs_started:
        assert time.monotonic() < deadline, "the batch never started"
        time.sleep(0.05)


def queued_and_unacked(queue: str) -> tuple[int, int]:
    client = get_redis()
    unacked = [
        raw for raw in client.hvals("unacked") if json.loads(raw)[2] == queue
    ]  # kombu keeps [message, exchange, routing key]
    return client.llen(queue), len(unacked)
