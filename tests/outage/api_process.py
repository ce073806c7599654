"""An API process (gunicorn, as tests/live/stack.py runs it) of an outage test's own, on the
dependencies the test points it at (a proxy it can take down, a Redis it can kill)."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.doubles.redis_server import _die_with_parent
from tests.live.stack import ROOT, free_port


@dataclass
class ApiServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None


@contextlib.contextmanager
def api_server(env: dict[str, str], log_path: Path, workers: int = 2) -> Iterator[ApiServer]:
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "leadflow.wsgi", "-c", "gunicorn.conf.py"]
    argv += ["-b", f"127.0.0.1:{port}", "-w", str(workers), "--no-control-socket"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    server = ApiServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if not server.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start:\n{server.log()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{server.url}/healthz", timeout=1.0).status_code == 200:
                    break
            time.sleep(0.1)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
