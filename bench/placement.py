"""Where the platform's processes run during overload: on cores shared by all, or split.

- `shared`: the kernel places everything on both cores, as `make run` does on one machine.
- `split`: the API and Redis on one core, the pools, control and PostgreSQL on the other, as a
  deployment puts the API, Redis and the workers on different hosts. The pools then cannot take
  the CPU the API needs to answer, which is what the ACK latency under overload measures.
  Redis goes with the API because every answer waits on it (admission's one round trip): with
  Redis on the workers' saturated core, the API sat idle 60 % of the time waiting for Redis to
  be scheduled (make bench, 2x-batch20-split at 9288543: API 0.34 cores, ACK p50 0.86 s).
  wrk is left to the kernel: it stands for clients on other machines.

The servers are pinned only when they are this checkout's embedded ones (the devstack says so
in LEADFLOW_EMBEDDED): the machine's shared PostgreSQL or Redis is not the bench's to move.
"""

import contextlib
import os
from pathlib import Path

import psycopg

API_CPUS = frozenset({0})
BACKEND_CPUS = frozenset({1})


def split_possible() -> bool:
    return len(os.sched_getaffinity(0)) >= 2 and {0, 1} <= os.sched_getaffinity(0)


def service_cpus(placement: str, is_api: bool) -> frozenset[int] | None:
    """The CPUs a service is started on (None: wherever the kernel likes)."""
    if placement != "split":
        return None
    return API_CPUS if is_api else BACKEND_CPUS


def _tasks(pid: int) -> list[int]:
    """The process's threads (sched_setaffinity moves one thread at a time)."""
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) == parent:
                found.append(int(entry))
    return found


def server_pids(database_url: str) -> dict[str, list[int]]:
    """The embedded servers' processes: Redis, and PostgreSQL's postmaster with its children
    (backends forked later inherit the postmaster's affinity)."""
    embedded = set(filter(None, os.environ.get("LEADFLOW_EMBEDDED", "").split(",")))
    pids: dict[str, list[int]] = {}
    if "redis" in embedded:
        from leadflow.redis_conn import get_redis

        pids["redis"] = [int(get_redis().info("server")["process_id"])]
    if "postgres" in embedded:
        with psycopg.connect(database_url, autocommit=True) as conn:
            # Read while the backend lives: it exits with the connection.
            stat = Path(f"/proc/{conn.info.backend_pid}/stat").read_text()
        postmaster = int(stat.rsplit(")", 1)[1].split()[1])
        pids["postgres"] = [postmaster, *_children(postmaster)]
    return pids


@contextlib.contextmanager
def servers_placed(placement: str, database_url: str):
    """Pin the embedded servers for a `split` phase (Redis with the API, PostgreSQL with the
    pools); give them every core back after it. Yields the names of the servers pinned."""
    if placement != "split":
        yield []
        return
    pids = server_pids(database_url)
    everywhere = os.sched_getaffinity(0)
    for server, members in pids.items():
        cpus = API_CPUS if server == "redis" else BACKEND_CPUS
        for pid in members:
            for tid in _tasks(pid):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(tid, cpus)
    try:
        yield sorted(pids)
    finally:
        for members in server_pids(database_url).values():
            for pid in members:
                for tid in _tasks(pid):
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(tid, everywhere)
