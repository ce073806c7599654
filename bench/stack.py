"""The processes a scenario runs: the API, the pools, the control process, the references.

Command lines come from the Procfile (the api line for every gunicorn, pool A's line for the
per-lead reference worker), so the bench measures the configuration `make run` uses. Every
process is started through bench.launch (a deadline, and death with the driver), in its own
session, with its output in a log file under the run's directory; only 127.0.0.1 is bound.
"""

import contextlib
import functools
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from bench.launch import die_with_parent, group_members
from leadflow.embedded import free_port  # noqa: F401 - scenarios import it from here

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "Procfile"
SUPERVISOR = ["python", "leadflow/supervise.py", "--"]  # ahead of each Procfile command
STOP_SECONDS = 30.0


class StackError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------
# Where the bench's data goes: its own database and Redis database, never the ones of
# `make run` or the tests, because every scenario starts by emptying them.
# ---------------------------------------------------------------------------------------------
def bench_urls(environ: dict[str, str], database_name: str, redis_db: int) -> tuple[str, str]:
    database_url = environ.get("DATABASE_URL")
    redis_url = environ.get("REDIS_URL")
    if not database_url or not redis_url:
        raise StackError(
            "DATABASE_URL and REDIS_URL are unset: run the bench with `make bench` "
            "(it starts the embedded services) or point them at your servers"
        )
    database_url = urlunsplit(urlsplit(database_url)._replace(path=f"/{database_name}"))
    redis_url = urlunsplit(urlsplit(redis_url)._replace(path=f"/{redis_db}"))
    return database_url, redis_url


def database_ensure(database_url: str) -> None:
    """Create the bench database on the server if it is missing."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


# ---------------------------------------------------------------------------------------------
# Command lines from the Procfile.
# ---------------------------------------------------------------------------------------------
def procfile_command(name: str) -> tuple[dict[str, str], list[str]]:
    """The Procfile's line for `name`: its leading VAR=value assignments, and its argv (without
    the supervisor), with ${VAR:-default} expanded from the environment."""
    for line in PROCFILE.read_text().splitlines():
        if line.startswith(f"{name}:"):
            command = line.split(":", 1)[1].strip()
            command = re.sub(
                r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m[1]) or m[2], command
            )
            argv = shlex.split(command)
            env = {}
            while argv and re.match(r"^[A-Za-z_]\w*=", argv[0]):
                key, _, value = argv.pop(0).partition("=")
                env[key] = value
            if argv[:3] == SUPERVISOR:  # bench starts and stops its processes itself
                argv = argv[3:]
            return env, argv
    raise StackError(f"the Procfile has no {name!r} line")


def procfile_argv(name: str) -> list[str]:
    return procfile_command(name)[1]


def _option_set(argv: list[str], option: str, value: str) -> list[str]:
    if option not in argv:
        raise StackError(f"expected {option} in {shlex.join(argv)}")
    argv = list(argv)
    argv[argv.index(option) + 1] = value
    return argv


def gunicorn_argv(wsgi_app: str, port: int, operator_port: int) -> list[str]:
    """The Procfile's api line serving `wsgi_app` on 127.0.0.1:port, and its operator listener
    (the line's second -b) on operator_port."""
    argv = procfile_argv("api")
    if argv[0] != "gunicorn" or "leadflow.wsgi" not in argv:
        raise StackError(f"unexpected api line in the Procfile: {shlex.join(argv)}")
    binds = [index + 1 for index, arg in enumerate(argv) if arg == "-b"]
    if not binds:
        raise StackError(f"expected -b in {shlex.join(argv)}")
    for index, bind_port in zip(binds, [port, *[operator_port] * (len(binds) - 1)], strict=True):
        argv[index] = f"127.0.0.1:{bind_port}"
    argv[argv.index("leadflow.wsgi")] = wsgi_app
    return [sys.executable, "-m", "gunicorn", *argv[1:]]


def gunicorn_workers() -> int:
    argv = procfile_argv("api")
    return int(argv[argv.index("-w") + 1]) if "-w" in argv else 1


def celery_argv(line: str, node: str, app: str | None = None, queues: str | None = None):
    """A pool's Procfile line; the reference worker swaps the app and the queues."""
    argv = procfile_command(line)[1]
    if argv[0] != "celery":
        raise StackError(f"unexpected {line} line in the Procfile: {shlex.join(argv)}")
    argv = _option_set(argv, "-n", f"{node}-bench{os.getpid()}@%h")
    if app:
        argv = _option_set(argv, "-A", app)
    if queues:
        argv = _option_set(argv, "-Q", queues)
    return [sys.executable, "-m", "celery", *argv[1:]]


def control_argv(max_seconds: float) -> list[str]:
    argv = procfile_argv("control")
    if argv[:3] != ["python", "manage.py", "run_control"]:
        raise StackError(f"unexpected control line in the Procfile: {shlex.join(argv)}")
    return [sys.executable, *argv[1:], "--max-seconds", f"{max_seconds:.0f}"]


# ---------------------------------------------------------------------------------------------
# Processes.
# ---------------------------------------------------------------------------------------------
@dataclass
class Service:
    name: str
    argv: list[str]
    ready_text: str | None = None
    ready_count: int = 1
    http_port: int | None = None  # wait until something answers HTTP here
    env: dict[str, str] = field(default_factory=dict)  # on top of the stack's environment
    cpus: frozenset[int] | None = None  # the CPUs it runs on (bench/placement.py); None: any
    popen: subprocess.Popen | None = None
    log_path: Path | None = None
    _log_mark: int = 0

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        """The command's processes (master and children), without the launcher."""
        if self.popen is None:
            return []
        return group_members(exclude=self.popen.pid, pgid=self.popen.pid)


@dataclass
class Stack:
    env: dict[str, str]
    log_dir: Path
    max_seconds: float
    services: dict[str, Service] = field(default_factory=dict)

    def start(self, *services: Service, timeout: float = 90.0) -> None:
        for service in services:
            self._spawn(service)
        for service in services:
            self._wait_ready(service, timeout)

    def _spawn(self, service: Service) -> None:
        if service.name in self.services and self.services[service.name].popen.poll() is None:
            raise StackError(f"{service.name} is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        service.log_path = self.log_dir / f"{service.name}.log"
        service._log_mark = service.log_path.stat().st_size if service.log_path.exists() else 0
        with service.log_path.open("ab") as log:
            service.popen = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.launch",
                    "--max-seconds",
                    f"{self.max_seconds:.0f}",
                    "--",
                    *service.argv,
                ],
                cwd=ROOT,
                env=self._environment(service),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=functools.partial(_child_setup, service.cpus),
            )
        self.services[service.name] = service

    def _environment(self, service: Service) -> dict[str, str]:
        """The stack's environment and the service's; a relative path under var/ (the Procfile's
        metrics directories) moves into the run's directory, away from `make run`'s files."""
        env = {**self.env, **service.env}
        for key, value in service.env.items():
            if value.startswith("var/"):
                env[key] = str(self.log_dir / value)
        return env

    def _wait_ready(self, service: Service, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if service.popen.poll() is not None:
                raise StackError(f"{service.name} exited:\n{service.log()[-3000:]}")
            fresh = service.log()[service._log_mark :] if service.ready_text else ""
            logged = (
                not service.ready_text or fresh.count(service.ready_text) >= service.ready_count
            )
            if logged and (service.http_port is None or _answers_http(service.http_port)):
                return
            time.sleep(0.1)
        raise StackError(
            f"{service.name} not ready after {timeout:.0f} s:\n{service.log()[-3000:]}"
        )

    def stop(self, *names: str) -> None:
        """Stop the named services (all when none is named) and wait until they are gone."""
        chosen = [self.services[n] for n in names] if names else list(self.services.values())
        for service in chosen:
            if service.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    service.popen.send_signal(signal.SIGTERM)  # the launcher stops its group
        deadline = time.monotonic() + STOP_SECONDS
        for service in chosen:
            with contextlib.suppress(subprocess.TimeoutExpired):
                service.popen.wait(timeout=max(deadline - time.monotonic(), 0.1))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.popen.pid, signal.SIGKILL)
            service.popen.wait()
            self.services.pop(service.name, None)

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _child_setup(cpus: frozenset[int] | None) -> None:
    """In the child before exec: die with the driver; run on `cpus` (inherited by every
    process the command forks)."""
    die_with_parent()
    if cpus is not None:
        os.sched_setaffinity(0, cpus)


def _answers_http(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
            sock.sendall(b"GET /bench-ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def api_service(name: str, wsgi_app: str, env: dict[str, str] | None = None) -> Service:
    """gunicorn with the Procfile's api configuration, serving wsgi_app on a free port."""
    port, operator_port = free_port(), free_port()
    return Service(
        name=name,
        argv=gunicorn_argv(wsgi_app, port, operator_port),
        env={
            **procfile_command("api")[0],
            "LEADFLOW_OPERATOR_PORT": str(operator_port),
            **(env or {}),
        },
        ready_text="Booting worker",
        ready_count=gunicorn_workers(),
        http_port=port,
    )


def pool_service(pool: str) -> Service:
    return Service(
        name=f"pool-{pool}",
        argv=celery_argv(f"pool-{pool}", f"pool-{pool}"),
        ready_text="ready.",
        env=procfile_command(f"pool-{pool}")[0],
    )


def control_service(max_seconds: float) -> Service:
    return Service(name="control", argv=control_argv(max_seconds), ready_text="control: active")
