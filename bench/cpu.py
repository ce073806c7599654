"""CPU used while a scenario measures: per process the bench started, Redis, the bench
database's PostgreSQL backends, and the whole machine (other people's work included).

Read from /proc (utime + stime) and Redis INFO; reported in cores (CPU seconds ÷ wall seconds),
so it shows what each number was limited by on a 2-core machine.
"""

import contextlib
import os
import resource
import time
from pathlib import Path

import psycopg

_TICKS = os.sysconf("SC_CLK_TCK")


def _process_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the command: state is fields[0]; utime and stime are the 14th and 15th fields.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _machine_busy_seconds() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / _TICKS


def _redis_seconds() -> float | None:
    from leadflow.redis_conn import get_redis

    with contextlib.suppress(Exception):
        info = get_redis().info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _postgres_seconds(database_url: str) -> tuple[float, dict[int, float]] | None:
    """The PostgreSQL server's CPU: the postmaster's own and its reaped children's (backends
    that came and went), and each live child's. All databases of the server: on the machine's
    shared server that includes other people's tests; the embedded one is the bench's alone."""
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            backend = conn.info.backend_pid
    except psycopg.Error:
        return None
    fields = _stat_fields(backend)
    if fields is None:
        return None
    postmaster = int(fields[1])
    own = _stat_fields(postmaster)
    if own is None:
        return None
    # utime, stime, cutime, cstime
    reaped = sum(int(v) for v in own[11:15]) / _TICKS
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != backend:
            child = _stat_fields(int(entry))
            if child is not None and int(child[1]) == postmaster:
                children[int(entry)] = (int(child[11]) + int(child[12])) / _TICKS
    return reaped, children


class CpuMeter:
    """Snapshots at start() and stop(); figures() gives cores used per process group."""

    def __init__(self, stack, database_url: str) -> None:
        self.stack = stack
        self.database_url = database_url
        self._start: dict = {}
        self._result: dict[str, float] = {}
        self._seconds: dict[str, float] = {}
        self._wall = 0.0

    def _snapshot(self) -> dict:
        services = {
            name: {pid: _process_seconds(pid) for pid in service.pids()}
            for name, service in self.stack.services.items()
        }
        postgres = _postgres_seconds(self.database_url)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "children": children.ru_utime + children.ru_stime,
            "driver": own.ru_utime + own.ru_stime,
            "at": time.monotonic(),
            "services": services,
            "postgres": postgres,
            "redis": _redis_seconds(),
            "machine": _machine_busy_seconds(),
        }

    def start(self) -> "CpuMeter":
        self._start = self._snapshot()
        return self

    def stop(self) -> dict[str, float]:
        """Close a window; windows add up (a meter may be started and stopped many times)."""
        end = self._snapshot()
        wall = end["at"] - self._start["at"]
        if wall <= 0:
            return self._result

        def used(before: dict, after: dict) -> float:
            total = 0.0
            for pid, seconds in after.items():
                if seconds is None:
                    continue
                start = before.get(pid)
                total += seconds - (start or 0.0) if start is not None else seconds
            return total

        result = {
            name: used(self._start["services"].get(name, {}), pids)
            for name, pids in end["services"].items()
        }
        if end["postgres"] and self._start["postgres"]:
            reaped = end["postgres"][0] - self._start["postgres"][0]
            live = used(self._start["postgres"][1], end["postgres"][1])
            result["postgres (whole server)"] = reaped + live
        if end["redis"] is not None and self._start["redis"] is not None:
            result["redis (whole server)"] = end["redis"] - self._start["redis"]
        # wrk runs as a child of the driver (through bench.launch) and is reaped within the window.
        result["wrk (load generator)"] = end["children"] - self._start["children"]
        result["bench driver"] = end["driver"] - self._start["driver"]
        result["machine (everything)"] = end["machine"] - self._start["machine"]
        self._wall += wall
        for name, seconds in result.items():
            self._seconds[name] = self._seconds.get(name, 0.0) + seconds
        self._result = {n: round(sec / self._wall, 2) for n, sec in self._seconds.items()}
        return self._result

    def __enter__(self) -> "CpuMeter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def seconds(self) -> dict[str, float]:
        """CPU seconds per process group over the windows measured."""
        return dict(self._seconds)

    @property
    def cores(self) -> dict[str, float]:
        return {name: cores for name, cores in self._result.items() if cores}
