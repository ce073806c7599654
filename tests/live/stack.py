"""The real platform for end-to-end tests: gunicorn, the three Celery pools, the control process.

Each process runs in its own session (process group) with its output in a log file; all of
them get SIGTERM, then SIGKILL, when the test session ends, and die with the test runner if it
dies first (PR_SET_PDEATHSIG).
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from leadflow.embedded import free_port  # noqa: F401 - the tests import it from here

ROOT = Path(__file__).resolve().parents[2]
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Process:
    name: str
    argv: list[str]
    log_path: Path
    ready_text: str | None
    popen: subprocess.Popen | None = None
    env: dict[str, str] = field(default_factory=dict)  # on top of the stack's

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _pool_argv(pool: str, pool_type: str, concurrency: int, run_id: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "leadflow",
        "worker",
        "-n",
        f"pool-{pool}-{run_id}@%h",
        "-Q",
        f"{pool}.critical,{pool}.normal,{pool}.low",
        "--pool",
        pool_type,
        "-c",
        str(concurrency),
        "-O",
        "fair",
        "--without-mingle",
        "--without-gossip",
        "-l",
        "INFO",
    ]


@dataclass
class Stack:
    env: dict[str, str]
    log_dir: Path
    api_port: int = field(default_factory=free_port)
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def operator_port(self) -> int:
        return int(self.env["LEADFLOW_OPERATOR_PORT"])

    @property
    def operator_url(self) -> str:
        """The API's operator listener: /admin, /metrics, /scaling/backlog, detailed /readyz."""
        return f"http://127.0.0.1:{self.operator_port}"

    def definitions(self) -> list[Process]:
        run_id = str(os.getpid())
        gunicorn = [
            sys.executable,
            "-m",
            "gunicorn",
            "leadflow.wsgi",
            "-c",
            "gunicorn.conf.py",
            "-b",
            f"127.0.0.1:{self.api_port}",
            "-b",
            f"127.0.0.1:{self.operator_port}",
            "-w",
            "2",
            "--no-control-socket",
            "--access-logfile",
            "-",
        ]
        control = [sys.executable, "manage.py", "run_control"]
        return [
            Process("api", gunicorn, self.log_dir / "api.log", "Booting worker"),
            Process(
                "pool-a",
                _pool_argv("a", "prefork", 2, run_id),
                self.log_dir / "pool-a.log",
                "ready.",
                # prefork: the children's metrics add up through files (as in the Procfile)
                env={"PROMETHEUS_MULTIPROC_DIR": str(self.log_dir / "metrics-pool-a")},
            ),
            Process(
                "pool-b",
                _pool_argv("b", "threads", 8, run_id),
                self.log_dir / "pool-b.log",
                "ready.",
            ),
            Process(
                "pool-c",
                _pool_argv("c", "threads", 8, run_id),
                self.log_dir / "pool-c.log",
                "ready.",
            ),
            Process("control", control, self.log_dir / "control.log", "control: active"),
        ]

    def start_all(self) -> None:
        for process in self.definitions():
            self.processes[process.name] = process
            self._spawn(process)
        for process in self.processes.values():
            self._wait_ready(process)
        self._wait_http()

    def _spawn(self, process: Process) -> None:
        log = process.log_path.open("ab")
        process.popen = subprocess.Popen(
            process.argv,
            cwd=ROOT,
            env={**self.env, **process.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def _wait_ready(self, process: Process, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        start_size = 0
        while time.monotonic() < deadline:
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited:\n{process.log()[-3000:]}")
            if process.ready_text and process.ready_text in process.log()[start_size:]:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{process.name} not ready after {timeout}s:\n{process.log()[-3000:]}")

    def _wait_http(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.api_url}/api/v1/leads/x", timeout=1.0)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the API did not answer")

    def kill(self, name: str) -> None:
        """SIGKILL the process and all its children (e.g. a pool's prefork children)."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, signal.SIGKILL)
        process.popen.wait(timeout=10)

    def restart(self, name: str) -> None:
        process = self.processes[name]
        mark = len(process.log())
        self._spawn(process)
        deadline = time.monotonic() + 60
        while process.ready_text not in process.log()[mark:]:
            if time.monotonic() > deadline or process.popen.poll() is not None:
                raise RuntimeError(f"{name} did not restart:\n{process.log()[-3000:]}")
            time.sleep(0.1)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.popen and process.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            if not process.popen:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(timeout=max(deadline - time.monotonic(), 0.1))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)  # any child left behind
