"""The platform as separately supervised processes, as compose or Kubernetes run it.

Each Procfile process (api, pool-a, pool-b, pool-c, control, flower) runs under bench.launch
(a deadline; its whole process group stopped when it ends or the harness dies), started from
its Procfile line with only ports and names changed. A supervisor thread restarts any that
exits, after a back-off of 1 s doubling to 10 s while it keeps exiting within 30 s of its
start, and keeps every exit (time, code) so each experiment can say what died and how often.
"""

import contextlib
import logging
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.stack import gunicorn_workers, procfile_command
from chaos.proc import ROOT, children, spawn, stop, wait_until
from leadflow.embedded import free_port

log = logging.getLogger("chaos")

BACKOFF_MIN, BACKOFF_MAX, STABLE_SECONDS = 1.0, 10.0, 30.0


@dataclass
class Managed:
    name: str
    argv: list[str]
    env: dict[str, str]
    ready_text: str | None = None
    ready_count: int = 1
    http_port: int | None = None
    popen: object = None
    started_at: float = 0.0
    log_mark: int = 0
    backoff: float = BACKOFF_MIN
    restart_at: float | None = None
    killed: bool = False  # the harness SIGKILLed it: its next exit is the fault, not a crash
    exits: list[tuple[float, int, bool]] = field(default_factory=list)  # (at, code, killed)

    def command_pid(self) -> int | None:
        """The command's pid (the launcher's child), or None while it is not running."""
        if self.popen is None or self.popen.poll() is not None:
            return None
        found = children(self.popen.pid)
        return found[0] if found else None


def _python(argv: list[str]) -> list[str]:
    """A Procfile argv run by this interpreter (the venv's), as `make run` finds it on PATH."""
    head, rest = argv[0], argv[1:]
    if head == "python":
        return [sys.executable, *rest]
    return [sys.executable, "-m", head, *rest]


def _option(argv: list[str], option: str, value: str) -> list[str]:
    argv = list(argv)
    if option in argv:
        argv[argv.index(option) + 1] = value
        return argv
    for index, arg in enumerate(argv):
        if arg.startswith(option + "="):
            argv[index] = f"{option}={value}"
            return argv
    return [*argv, option, value]


class Platform:
    def __init__(self, env: dict[str, str], run_dir: Path, max_seconds: float) -> None:
        self.env = env
        self.run_dir = run_dir
        self.log_dir = run_dir / "logs"
        self.max_seconds = max_seconds
        self.api_port = free_port()
        self.processes: dict[str, Managed] = {}
        self._lock = threading.RLock()
        self._supervising = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
        for managed in self._definitions():
            self.processes[managed.name] = managed

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _definitions(self) -> list[Managed]:
        tag = f"chaos{id(self) % 100000}"
        api_env, api = procfile_command("api")
        api = _option(_python(api), "-b", f"127.0.0.1:{self.api_port}")
        # The operator listener (the api line's second -b) on a port of its own too.
        operator_port = free_port()
        second_bind = api.index("-b", api.index("-b") + 1) + 1
        api[second_bind] = f"127.0.0.1:{operator_port}"
        api_env = {**api_env, "LEADFLOW_OPERATOR_PORT": str(operator_port)}
        found = [Managed("api", api, api_env, "Booting worker", gunicorn_workers(), self.api_port)]
        for pool in ("a", "b", "c"):
            env, argv = procfile_command(f"pool-{pool}")
            argv = _option(_python(argv), "-n", f"pool-{pool}-{tag}@%h")
            env = {
                key: str(self.run_dir / value) if value.startswith("var/") else value
                for key, value in env.items()
            }
            found.append(Managed(f"pool-{pool}", argv, env, "ready."))
        control_env, control = procfile_command("control")
        found.append(Managed("control", _python(control), control_env, "control: active"))
        flower_env, flower = procfile_command("flower")
        # Flower refuses to start without credentials (flowerconfig.py): ones for this run.
        flower_env = {**flower_env, "FLOWER_BASIC_AUTH": f"chaos:{secrets.token_urlsafe(18)}"}
        flower_port = free_port()
        flower = _option(_python(flower), "--port", str(flower_port))
        found.append(Managed("flower", flower, flower_env, None, http_port=flower_port))
        return found

    # -- starting and stopping -----------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> None:
        if not self._thread.is_alive():
            self._thread.start()
        with self._lock:
            for managed in self.processes.values():
                self._spawn(managed)
        for managed in self.processes.values():
            self.wait_ready(managed, timeout)
        self._supervising.set()

    def _spawn(self, managed: Managed) -> None:
        log_path = self.log_dir / f"{managed.name}.log"
        managed.log_mark = log_path.stat().st_size if log_path.exists() else 0
        argv = [
            sys.executable,
            "-m",
            "bench.launch",
            "--max-seconds",
            f"{self.max_seconds:.0f}",
            "--",
            *managed.argv,
        ]
        managed.popen = spawn(argv, log_path, env={**self.env, **managed.env}, cwd=ROOT)
        managed.started_at = time.monotonic()
        managed.restart_at = None

    def log_text(self, name: str, since_mark: bool = True) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        with path.open("rb") as handle:
            handle.seek(self.processes[name].log_mark if since_mark else 0)
            return handle.read().decode(errors="replace")

    def wait_ready(self, managed: Managed, timeout: float) -> None:
        def ready() -> bool:
            if managed.popen.poll() is not None:
                tail = self.log_text(managed.name)[-3000:]
                raise RuntimeError(f"{managed.name} exited while starting:\n{tail}")
            logged = self.log_text(managed.name).count(managed.ready_text or "")
            if managed.ready_text and logged < managed.ready_count:
                return False
            return managed.http_port is None or _answers_http(managed.http_port)

        wait_until(ready, timeout, what=f"{managed.name} ready")

    def stop(self) -> None:
        """Stop every process (SIGTERM to each launcher, which stops its group), no restarts."""
        self._supervising.clear()
        with self._lock:
            for managed in self.processes.values():
                if managed.popen is not None and managed.popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        managed.popen.send_signal(signal.SIGTERM)
            for managed in self.processes.values():
                if managed.popen is not None:
                    stop(managed.popen, grace=30)

    def restart_all(self, timeout: float = 180.0) -> None:
        self.stop()
        self.start(timeout)

    def close(self) -> None:
        self.stop()
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    # -- supervision ---------------------------------------------------------------------------
    def _supervise(self) -> None:
        # Restarts are spawned from this thread, which lives until close(): PR_SET_PDEATHSIG
        # fires when the forking thread ends.
        while not self._closing.wait(0.2):
            if not self._supervising.is_set():
                continue
            with self._lock:
                now = time.monotonic()
                for managed in self.processes.values():
                    self._check(managed, now)

    def _check(self, managed: Managed, now: float) -> None:
        if managed.restart_at is not None:
            if now >= managed.restart_at:
                log.info("supervisor: starting %s again", managed.name)
                self._spawn(managed)
            return
        code = managed.popen.poll()
        if code is None:
            return
        # The launcher exits 0 when its command was killed by a signal, else with its code.
        managed.exits.append((now, code, managed.killed))
        managed.killed = False
        ran = now - managed.started_at
        managed.backoff = (
            BACKOFF_MIN if ran >= STABLE_SECONDS else min(managed.backoff * 2, BACKOFF_MAX)
        )
        managed.restart_at = now + managed.backoff
        log.info("supervisor: %s exited (code %s) after %.1f s", managed.name, code, ran)

    def exits_since(self, since: float) -> dict[str, list[str]]:
        """process -> how it exited since then: "killed" (by the harness) or "code N"."""
        with self._lock:
            found = {
                name: [
                    "killed" if killed else f"code {code}"
                    for at, code, killed in m.exits
                    if at >= since
                ]
                for name, m in self.processes.items()
            }
        return {name: exits for name, exits in found.items() if exits}

    def kill_command(self, name: str) -> int | None:
        """SIGKILL a process's command (the supervisor then restarts it); its pid, or None."""
        with self._lock:
            managed = self.processes[name]
            pid = managed.command_pid()
            if pid is not None:
                managed.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return pid

    # -- faults --------------------------------------------------------------------------------
    def worker_targets(self) -> list[tuple[str, int | None]]:
        """(label, pid) of every worker: pool A's children (a pid: its master replaces it),
        pool B's and C's process (None: killed with kill_command, restarted by the supervisor)."""
        targets: list[tuple[str, int | None]] = []
        master = self.processes["pool-a"].command_pid()
        if master is not None:
            targets += [(f"pool-a child {pid}", pid) for pid in sorted(children(master))]
        targets += [(name, None) for name in ("pool-b", "pool-c") if self.running(name)]
        return targets

    def running(self, name: str) -> bool:
        return self.processes[name].command_pid() is not None


def _answers_http(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2.0)
        return True
    except httpx.TransportError:
        return False


class HttpDouble:
    """tests/doubles/http_double.py as a child on a fixed port: killed, it comes back there."""

    def __init__(self, name: str, run_dir: Path, max_seconds: float) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = run_dir / "logs" / f"{name}.log"
        self.max_seconds = max_seconds
        self.popen = None
        self.http = httpx.Client(base_url=self.url, timeout=30.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "tests.doubles.http_double", "--port", str(self.port)]
        argv += ["--max-seconds", f"{self.max_seconds:.0f}"]
        self.popen = spawn(argv, self.log_path)

        def answers() -> bool:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                return self.http.get("/_health").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, 30, what=self.name)

    def kill(self) -> None:
        if self.popen is not None:
            self.popen.kill()
            self.popen.wait()

    def configure(self, kind: str, **behaviour) -> None:
        self.http.post("/_control", json={"kind": kind, **behaviour}).raise_for_status()

    def calls(self, kind: str) -> list[dict]:
        response = self.http.get("/_requests", params={"kind": kind})
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self.http.post("/_reset").raise_for_status()

    def close(self) -> None:
        if self.popen is not None:
            stop(self.popen, grace=5)
        self.http.close()
