"""Where the time goes: py-spy samples a service's processes while a scenario measures them
(BENCH_PROFILE=1), and the collapsed stacks are summed up by function and by package."""

import contextlib
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# py-spy's frame: "function (path/to/file.py:123)"; the line is dropped to sum per function.
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_PACKAGES = (
    ("apps/", "leadflow apps"),
    ("workers/", "leadflow workers"),
    ("leadflow/", "leadflow project"),
    ("rest_framework/", "djangorestframework"),
    ("django_prometheus/", "django-prometheus"),
    ("django/", "django"),
    ("redis/", "redis-py"),
    ("kombu/", "kombu"),
    ("celery/", "celery"),
    ("billiard/", "billiard"),
    ("gunicorn/", "gunicorn"),
    ("psycopg/", "psycopg"),
    ("phonenumbers/", "phonenumbers"),
    ("orjson", "orjson"),
    ("json/", "json (stdlib)"),
    ("email/", "email (stdlib)"),
    ("uuid", "uuid (stdlib)"),
    ("re/", "re (stdlib)"),
    ("yaml/", "pyyaml"),
)


def _package(path: str) -> str:
    for marker, name in _PACKAGES:
        if marker in path:
            return name
    return "other (stdlib, interpreter)"


def summarize(collapsed: str, top: int = 15) -> dict:
    """Self and inclusive shares per function, and self share per package, from py-spy raw."""
    self_time: Counter = Counter()
    inclusive: Counter = Counter()
    packages: Counter = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        weight = int(count)
        total += weight
        frames = []
        for raw in stack.split(";"):
            match = _FRAME.match(raw.strip())
            frames.append((match["func"], match["file"]) if match else (raw.strip(), ""))
        # Skip the process/thread frames py-spy puts first; they are not code.
        frames = [f for f in frames if f[1]]
        if not frames:
            continue
        func, path = frames[-1]
        self_time[f"{func} ({_short(path)})"] += weight
        packages[_package(path)] += weight
        # Inclusive time only for the application's own frames: the framework's entry points
        # are in every stack and say nothing.
        for name in {f"{fn} ({_short(p)})" for fn, p in frames if _is_app(p)}:
            inclusive[name] += weight
    if not total:
        return {"samples": 0}

    def shares(counter: Counter) -> list[list]:
        return [[name, round(n / total, 4)] for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "self_by_package": shares(packages),
        "self_by_function": shares(self_time),
        "inclusive_by_app_function": shares(inclusive),
    }


def _is_app(path: str) -> bool:
    short = _short(path)
    return short.startswith(("apps/", "workers/", "leadflow/", "bench/refs/"))


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


@contextlib.contextmanager
def sampling(ctx, name: str | None, *services, seconds: float | None = None):
    """Sample the services' processes (not their masters' idle loops: all of them, py-spy
    --subprocesses) for `seconds` (default the scenario's duration) while the block runs."""
    if not (ctx.config.profile and name):
        yield
        return
    binary = py_spy()
    if binary is None:
        ctx.log("profile: py-spy is not installed; skipping")
        yield
        return
    seconds = seconds or ctx.config.seconds
    out_dir = ctx.run_dir / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    recorders = []
    for service in services:
        path = out_dir / f"{name}-{service.name}.txt"
        argv = [
            binary,
            "record",
            "--pid",
            str(min(service.pids())),
            "--subprocesses",
            "--nonblocking",
            "--format",
            "raw",
            "--rate",
            "97",
            "--duration",
            str(int(seconds)),
            "--output",
            str(path),
        ]
        launcher = [sys.executable, "-m", "bench.launch", "--max-seconds", str(seconds + 60), "--"]
        recorders.append(
            (
                service.name,
                path,
                subprocess.Popen(
                    launcher + argv,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,  # the launcher cleans up its own group only
                ),
            )
        )
    try:
        yield
    finally:
        for service_name, path, recorder in recorders:
            with contextlib.suppress(subprocess.TimeoutExpired):
                recorder.wait(timeout=seconds + 30)
            if path.exists():
                ctx.profiles[f"{name}/{service_name}"] = summarize(path.read_text())


def cprofile_summary(stats, top: int = 15) -> dict:
    """The same summary from a cProfile run in the driver (pstats.Stats)."""
    total = sum(entry[2] for entry in stats.stats.values())  # tottime
    if not total:
        return {"samples": 0}
    self_time: Counter = Counter()
    inclusive: Counter = Counter()
    packages: Counter = Counter()
    for (path, _line, func), (_cc, _nc, tottime, cumtime, _callers) in stats.stats.items():
        name = f"{func} ({_short(path)})"
        self_time[name] += tottime
        if _is_app(path):
            inclusive[name] += cumtime
        packages[_package(path)] += tottime

    def shares(counter: Counter) -> list[list]:
        return [[name, round(t / total, 4)] for name, t in counter.most_common(top)]

    return {
        "seconds": round(total, 3),
        "self_by_package": shares(packages),
        "self_by_function": shares(self_time),
        "inclusive_by_app_function": shares(inclusive),
    }
