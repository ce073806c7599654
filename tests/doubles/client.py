"""Start the HTTP double as a subprocess and steer it from a test."""

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


class HttpDouble:
    def __init__(self, url: str) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, timeout=5.0)

    def configure(self, kind: str, **behaviour) -> None:
        """kind "ai" or "crm"; behaviour: latency_ms, failure_rate (0..1), failure_status."""
        self._http.post("/_control", json={"kind": kind, **behaviour}).raise_for_status()

    def calls(self, kind: str) -> list[dict]:
        response = self._http.get("/_requests", params={"kind": kind})
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._http.post("/_reset").raise_for_status()


@contextlib.contextmanager
def http_double(max_seconds: float = 3600.0) -> Iterator[HttpDouble]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.doubles.http_double", "--max-seconds", str(max_seconds)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"HTTP double did not start: {line!r}")
        yield HttpDouble(line.removeprefix("listening on "))
    finally:
        process.terminate()
        process.wait(timeout=10)
