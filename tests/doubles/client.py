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

    def configure(self, kind: str, path: str | None = None, **behaviour) -> None:
        """kind "ai" or "crm"; with `path` (e.g. one tenant's "/crm/x"), only calls to it.
        Behaviour: latency_ms, failure_rate (0..1), failure_status, fail_first, drip_ms,
        body_bytes, omit_domains, bad_domains (tests/doubles/http_double.py says what each does).
        """
        update = {"kind": kind, **behaviour, **({"path": path} if path else {})}
        self._http.post("/_control", json=update).raise_for_status()

    def calls(self, kind: str, path: str | None = None) -> list[dict]:
        """The calls recorded (of one path only, if given), each with "at" and "status"."""
        params = {"kind": kind, **({"path": path} if path else {})}
        response = self._http.get("/_requests", params=params)
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
