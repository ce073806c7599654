"""The scenarios. Each takes the run's Context and returns its section of report.json:

{"title", "figures", "reference": {"name", "figures"}, "ratio", "references", "ratios",
 "targets": [{"name", "target", "value", "met"}], "series", "notes"}
"""

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.config import BenchConfig
from bench.cpu import CpuMeter
from bench.seams import BenchTenant
from bench.stack import Service, Stack, api_service


@dataclass
class Context:
    config: BenchConfig
    env: dict[str, str]
    run_dir: Path
    tenants: list[BenchTenant]
    log: Callable[[str], None] = print
    profiles: dict[str, dict] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)  # figures scenarios share

    @property
    def keys(self) -> list[str]:
        return [t.key for t in self.tenants]

    def stack(self, name: str, max_seconds: float) -> Stack:
        return Stack(env=self.env, log_dir=self.run_dir / "logs" / name, max_seconds=max_seconds)


def target(name: str, target: str, value, met: bool | None) -> dict:
    return {
        "name": name,
        "target": target,
        "value": value,
        "met": bool(met) if met is not None else False,
    }


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 3)


# ---------------------------------------------------------------------------------------------
# The API under test and its references, all with the Procfile's gunicorn configuration.
# ---------------------------------------------------------------------------------------------
# Intake-only scenarios have no pipeline draining the inboxes: backpressure (429 once a tier's
# backlog passes its bound) would turn them into measurements of refusals.
INTAKE_ONLY_ENV = {
    f"LEADFLOW_BACKPRESSURE_BACKLOG_{tier}": "1000000000" for tier in ("CRITICAL", "NORMAL", "LOW")
}


def app_api(name: str = "api", env: dict[str, str] | None = None) -> Service:
    return api_service(
        name, "leadflow.wsgi", {"DJANGO_SETTINGS_MODULE": "leadflow.settings", **(env or {})}
    )


def reference_api(ctx: Context, kind: str) -> Service:
    if kind == "wsgi_hello":
        return api_service(kind, "bench.refs.hello_wsgi:application")
    if kind == "django_min":
        return api_service(
            kind,
            "bench.refs.django_min.wsgi",
            {"DJANGO_SETTINGS_MODULE": "bench.refs.django_min.settings"},
        )
    if kind in ("drf_serializer", "drf_usual"):
        return api_service(
            kind,
            "bench.refs.drf_usual.wsgi",
            {
                "DJANGO_SETTINGS_MODULE": "bench.refs.drf_usual.settings",
                "BENCH_DRF_VARIANT": "serializer" if kind == "drf_serializer" else "usual",
                "BENCH_API_KEYS": ",".join(ctx.keys),
            },
        )
    raise ValueError(kind)


def api_url(service: Service) -> str:
    return f"http://127.0.0.1:{service.http_port}"


def probe(ctx: Context, service: Service, batch_size: int = 0) -> None:
    """One real request before measuring: a service that answers errors is not measured."""
    url = api_url(service)
    nonce = f"probe{time.time_ns():x}"
    if batch_size:
        path, body = (
            "/api/v1/leads/batch",
            {"leads": [lead_body(nonce, i) for i in range(batch_size)]},
        )
    else:
        path, body = "/api/v1/leads", lead_body(nonce, 0)
    response = httpx.post(
        url + path, json=body, headers={"Authorization": f"Bearer {ctx.keys[0]}"}, timeout=30
    )
    if response.status_code not in (200, 202):
        raise RuntimeError(
            f"{service.name} answered {response.status_code} to a lead: {response.text[:500]}"
            f"\n{service.log()[-2000:]}"
        )


# ---------------------------------------------------------------------------------------------
# Filling the inboxes through the API (POST /leads/batch), as a client would.
# ---------------------------------------------------------------------------------------------
def lead_body(nonce: str, n: int, critical: bool = False) -> dict:
    return {
        "email": f"{'crit' if critical else 'lead'}-{nonce}.{n}@acme-{n % 97}.example.com",
        "name": f"Ada Lovelace {n}",
        "company": "Analytical Engines Ltd",
        "phone": "+44 20 7946 0958",
        "source": "google_ads",
        "campaign_id": "spring-launch-2026",
        "region": "gb",
        "priority": "critical" if critical else "normal",
        "payload": {"utm_source": "google", "utm_medium": "cpc", "landing_page": "/pricing"},
    }


def inboxes_fill(ctx: Context, url: str, count: int, batch_size: int = 500) -> float:
    """POST `count` new leads in batches over the bench tenants; returns the seconds it took."""
    nonce = f"{time.time_ns():x}"
    started = time.monotonic()
    batches = [(i, min(batch_size, count - i)) for i in range(0, count, batch_size)]
    errors: list[str] = []
    lock = threading.Lock()

    def worker(worker_index: int) -> None:
        with httpx.Client(base_url=url, timeout=60.0) as client:
            for number, (start, size) in enumerate(batches):
                if number % 2 != worker_index:
                    continue
                key = ctx.keys[number % len(ctx.keys)]
                body = {"leads": [lead_body(nonce, start + j) for j in range(size)]}
                for _attempt in range(100):
                    response = client.post(
                        "/api/v1/leads/batch", json=body, headers={"Authorization": f"Bearer {key}"}
                    )
                    if response.status_code == 429:
                        time.sleep(min(float(response.headers.get("Retry-After", "1")), 5.0))
                        continue
                    break
                if response.status_code != 202 or response.json().get("accepted") != size:
                    with lock:
                        errors.append(f"{response.status_code} {response.text[:300]}")
                    return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"filling the inboxes failed: {errors[0]}")
    return time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# Watching PostgreSQL while a pipeline runs.
# ---------------------------------------------------------------------------------------------
class RowWatcher:
    """Samples a count (e.g. qualified rows) every `interval` seconds in a thread."""

    def __init__(self, count: Callable[[], int], interval: float = 0.25) -> None:
        self.count = count
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (monotonic time, count)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from django.db import connection

        try:
            while not self._stop.is_set():
                self.samples.append((time.monotonic(), self.count()))
                self._stop.wait(self.interval)
        finally:
            connection.close()

    def start(self) -> "RowWatcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def latest(self) -> int:
        return self.samples[-1][1] if self.samples else 0

    def wait_for(self, count: int, timeout: float) -> float | None:
        """Monotonic time of the first sample reaching `count`, or None after timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, seen in list(self.samples):
                if seen >= count:
                    return at
            time.sleep(self.interval / 2)
        return None

    def series(self, origin: float, window: float = 1.0) -> list[dict]:
        """Count, and rate over the last `window` seconds, per sample since origin."""
        points = []
        samples = list(self.samples)
        back = 0
        for at, seen in samples:
            while back < len(samples) - 1 and samples[back + 1][0] <= at - window:
                back += 1
            rate = None
            if samples[back][0] < at:
                rate = round((seen - samples[back][1]) / (at - samples[back][0]), 1)
            if at >= origin:
                points.append({"t": round(at - origin, 2), "count": seen, "rate": rate})
        return points

    def rate_between(self, start: float, end: float) -> float | None:
        inside = [(at, seen) for at, seen in self.samples if start <= at <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


@contextlib.contextmanager
def watching(count: Callable[[], int], interval: float = 0.25):
    watcher = RowWatcher(count, interval).start()
    try:
        yield watcher
    finally:
        watcher.stop()


def cpu_meter(ctx: Context, stack: Stack) -> CpuMeter:
    return CpuMeter(stack, ctx.env["DATABASE_URL"])
