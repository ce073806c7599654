"""A TCP proxy on 127.0.0.1 in front of one server, which a test takes down and brings back: an
outage of a shared server (the one PostgreSQL every engineer tests on) without stopping it.

The proxy is chaos/proxy.py (the one `make chaos` cuts its servers with), run as a child; this
is the test's handle on it.
"""

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class TcpProxy:
    """The test's handle on a running proxy."""

    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process = process
        self.port = port

    def _command(self, command: str) -> int:
        self.process.stdin.write(f"{command}\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().split()
        if answer[:2] != ["ok", command]:
            raise RuntimeError(f"tcp proxy answered {answer!r} to {command!r}")
        return int(answer[2])

    def down(self) -> None:
        self._command("down")

    def up(self) -> None:
        self._command("up")

    def connections_accepted(self) -> int:
        return self._command("count")


@contextlib.contextmanager
def tcp_proxy(target: str, max_seconds: float = 3600.0) -> Iterator[TcpProxy]:
    process = subprocess.Popen(
        [sys.executable, "-m", "chaos.proxy", "--target", target]
        + ["--max-seconds", str(max_seconds)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"tcp proxy did not start: {line!r}")
        yield TcpProxy(process, int(line.rsplit(":", 1)[1]))
    finally:
        process.stdin.close()  # the proxy exits when its stdin closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
