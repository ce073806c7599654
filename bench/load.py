"""The load driver: wrk, run in consecutive slices so a run has throughput and latency over time.

gunicorn's sync workers close the connection after every answer, so wrk connects anew for
every request anyway: a new wrk per slice changes nothing for the server, and costs a few
milliseconds of idle time between slices. Each slice reports its answers by status, the leads
accepted and a grid of latency quantiles; the run's percentiles come from merging the grids.
"""

import contextlib
import json
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

WRK_DIR = Path(__file__).resolve().parent / "wrk"


class LoadError(RuntimeError):
    pass


@dataclass
class LoadSpec:
    """What to send: where, with which keys, how fast."""

    url: str  # http://127.0.0.1:PORT
    keys: list[str]
    connections: int = 16
    threads: int = 1
    batch_size: int = 0  # 0 = single leads to /api/v1/leads
    critical_permille: int = 0
    rate: float = 0.0  # offered requests/s; 0 = closed loop (as fast as answers come)
    timeout_seconds: float = 5.0

    @property
    def path(self) -> str:
        return "/api/v1/leads/batch" if self.batch_size else "/api/v1/leads"


@dataclass
class Slice:
    started: float  # seconds since the run started
    seconds: float
    answered: int
    statuses: dict[str, int]
    accepted_leads: int
    retry_after: int
    sent: int
    missed: int
    errors: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    quantiles: list[tuple[float, float]] = field(repr=False)  # (percentile, µs)

    def count(self, prefix: str) -> int:
        return sum(n for code, n in self.statuses.items() if code.startswith(prefix))


@dataclass
class LoadResult:
    spec: LoadSpec
    slices: list[Slice]

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.slices)

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.slices)

    def statuses(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for s in self.slices:
            for code, n in s.statuses.items():
                merged[code] = merged.get(code, 0) + n
        return dict(sorted(merged.items()))

    def errors(self) -> dict[str, int]:
        merged: dict[str, int] = {}
        for s in self.slices:
            for kind, n in s.errors.items():
                merged[kind] = merged.get(kind, 0) + n
        return merged

    def percentile_ms(self, p: float) -> float | None:
        """The run's latency percentile (answered requests), merged from the slices' grids."""
        points = []
        for s in self.slices:
            previous = 0.0
            for percentile, micros in s.quantiles:
                points.append((micros, (percentile - previous) / 100.0 * s.answered))
                previous = percentile
        if not points:
            return None
        points.sort()
        total = sum(w for _, w in points)
        rank, running = p / 100.0 * total, 0.0
        for micros, weight in points:
            running += weight
            if running >= rank - 1e-9:
                return micros / 1000.0
        return points[-1][0] / 1000.0

    def figures(self) -> dict:
        seconds = self.seconds or 1e-9
        statuses = self.statuses()
        answered = self.total("answered")
        ok = sum(n for code, n in statuses.items() if code.startswith("2"))
        errors = self.errors()
        unanswered = errors.get("timeout", 0) + errors.get("connect", 0) + errors.get("read", 0)
        figures = {
            "seconds": round(seconds, 2),
            "connections": self.spec.connections,
            "answered": answered,
            "answered_per_s": round(answered / seconds, 1),
            "ok_per_s": round(ok / seconds, 1),
            "statuses": statuses,
            "non_2xx": answered - ok,
            "errors": errors,
            "p50_ms": _round(self.percentile_ms(50)),
            "p90_ms": _round(self.percentile_ms(90)),
            "p99_ms": _round(self.percentile_ms(99)),
            "p999_ms": _round(self.percentile_ms(99.9)),
            "max_ms": _round(max((s.max_ms or 0) for s in self.slices) if self.slices else None),
            "unanswered": unanswered,
            # Sent but not answered when a slice ended: wrk drops them, the server still serves
            # them. Their latency is missing from the percentiles (and it is the longest).
            "dropped_at_slice_end": sum(max(0, s.sent - s.answered) for s in self.slices),
        }
        if self.spec.batch_size:
            figures["leads_per_request"] = self.spec.batch_size
            figures["accepted_leads"] = self.total("accepted_leads")
            figures["accepted_leads_per_s"] = round(self.total("accepted_leads") / seconds, 1)
        else:
            figures["accepted_per_s"] = round(self.total("accepted_leads") / seconds, 1)
        if self.spec.rate:
            figures["offered_per_s"] = round(self.spec.rate, 1)
            figures["sent_per_s"] = round(self.total("sent") / seconds, 1)
            figures["missed"] = self.total("missed")
            r429 = statuses.get("429", 0)
            figures["share_429"] = round(r429 / answered, 4) if answered else None
            figures["share_429_with_retry_after"] = (
                round(self.total("retry_after") / r429, 4) if r429 else None
            )
        return figures

    def series(self) -> list[dict]:
        return [
            {
                "t": round(s.started + s.seconds / 2, 2),
                "answered_per_s": round(s.answered / s.seconds, 1) if s.seconds else 0,
                "ok_per_s": round(s.count("2") / s.seconds, 1) if s.seconds else 0,
                "r429_per_s": round(s.statuses.get("429", 0) / s.seconds, 1) if s.seconds else 0,
                "accepted_leads_per_s": round(s.accepted_leads / s.seconds, 1) if s.seconds else 0,
                "p50_ms": s.p50_ms,
                "p99_ms": s.p99_ms,
            }
            for s in self.slices
        ]

    def to_json(self) -> dict:
        spec = asdict(self.spec)
        spec.pop("keys")
        return {"spec": spec, "figures": self.figures(), "series": self.series()}


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadError("wrk is not installed: `apt-get install wrk` (make bench does it)")
    return path


def _script(run_dir: Path, paced: bool) -> Path:
    """lead.lua, plus the pacing of paced.lua for an offered rate, as one file in the run dir."""
    path = run_dir / ("wrk-paced.lua" if paced else "wrk-lead.lua")
    if not path.exists():
        text = (WRK_DIR / "lead.lua").read_text()
        if paced:
            text += "\n" + (WRK_DIR / "paced.lua").read_text()
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def run_slice(spec: LoadSpec, seconds: float, run_dir: Path) -> dict:
    """One wrk run; returns what its done() printed."""
    seconds = max(int(round(seconds)), 1)
    threads = max(1, min(spec.threads, spec.connections))
    argv = [
        wrk_path(),
        "-t",
        str(threads),
        "-c",
        str(spec.connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        f"{spec.timeout_seconds:.0f}s",
        "-s",
        str(_script(run_dir, paced=bool(spec.rate))),
        spec.url + spec.path,
        "--",
        uuid.uuid4().hex[:10],
        spec.path,
        ",".join(spec.keys),
        str(spec.critical_permille),
        str(spec.batch_size),
        str(spec.rate),
        str(threads),
    ]
    # wrk stops by itself after -d; bench.launch adds a deadline and death with the driver.
    launcher = [sys.executable, "-m", "bench.launch", "--max-seconds", str(seconds + 60), "--"]
    completed = subprocess.run(
        launcher + argv,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        start_new_session=True,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line.removeprefix("BENCH_JSON "))
    raise LoadError(f"wrk failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")


def measure_slice(spec: LoadSpec, seconds: float, run_dir: Path, origin: float) -> Slice:
    """One slice of load; `origin` is the monotonic time the run started."""
    started = time.monotonic() - origin
    raw = run_slice(spec, seconds, run_dir)
    quantiles = [(round(float(p), 2), float(v)) for p, v in raw.get("quantiles") or []]
    answered = int(raw["answered"])
    lookup = dict(quantiles)
    return Slice(
        started=started,
        seconds=raw["duration_us"] / 1e6,
        answered=answered,
        statuses={str(k): int(v) for k, v in (raw.get("statuses") or {}).items()},
        accepted_leads=int(raw["accepted_leads"]),
        retry_after=int(raw["retry_after"]),
        sent=int(raw["sent"]),
        missed=int(raw["missed"]),
        errors={k: int(v) for k, v in raw["errors"].items()},
        p50_ms=lookup[50.0] / 1000 if answered else None,
        p99_ms=lookup[99.0] / 1000 if answered and 99.0 in lookup else None,
        max_ms=raw["latency"]["max"] / 1000 if answered else None,
        quantiles=quantiles,
    )


def run(spec: LoadSpec, seconds: float, run_dir: Path, slice_seconds: float = 2.0) -> LoadResult:
    """Offer the load for `seconds`, in slices of about slice_seconds."""
    count = max(1, round(seconds / slice_seconds))
    origin = time.monotonic()
    slices = [measure_slice(spec, seconds / count, run_dir, origin) for _ in range(count)]
    return LoadResult(spec=spec, slices=slices)


def run_interleaved(
    specs: dict[str, LoadSpec],
    seconds: float,
    run_dir: Path,
    slice_seconds: float = 2.0,
    around_slice=None,
) -> dict[str, LoadResult]:
    """Measure several targets for `seconds` each, their slices taking turns (the order
    alternates every round), so that drift of a shared machine falls on all of them alike.
    around_slice(name) may return a context manager entered around each slice of `name`."""
    count = max(1, round(seconds / slice_seconds))
    origin = time.monotonic()
    slices: dict[str, list[Slice]] = {name: [] for name in specs}
    names = list(specs)
    for round_index in range(count):
        for name in names if round_index % 2 == 0 else reversed(names):
            with around_slice(name) if around_slice else contextlib.nullcontext():
                done = measure_slice(specs[name], seconds / count, run_dir, origin)
            slices[name].append(done)
            # Requests wrk dropped at the end of the slice are still being served: let them
            # finish before the next target's slice, which they would slow down.
            time.sleep(min(2.0, max(0.05, (done.max_ms or 0) / 1000)))
    return {name: LoadResult(spec=specs[name], slices=slices[name]) for name in specs}
