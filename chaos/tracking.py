"""Every accepted lead, followed in PostgreSQL until it is terminal.

A poller reads, once a second, the status of the leads not yet seen terminal (its own
connection, straight to the server, never through the proxy); while PostgreSQL is down nothing
can become terminal, so the figures simply wait. The backlog it samples is "accepted and not
yet terminal", over every experiment so far, with where leads wait in Redis (chaos/seams.py).
"""

import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import psycopg
import redis

from chaos.config import TERMINAL_STATUSES
from chaos.seams import redis_gauges

POLL_SECONDS = 1.0
CHUNK = 5000


@dataclass
class Sample:
    at: float  # monotonic
    accepted: int
    backlog: int
    polled: bool  # False: PostgreSQL did not answer this time
    gauges: dict | None = None  # chaos.seams.redis_gauges, None when Redis did not answer


@dataclass
class ExperimentLeads:
    accepted_at: dict[str, float] = field(default_factory=dict)  # trace id -> monotonic
    tenant: dict[str, str] = field(default_factory=dict)  # trace id -> tenant name


class Tracker:
    def __init__(self, conninfo: dict, dbname: str, redis_url: str) -> None:
        self.conninfo = {**conninfo, "dbname": dbname, "connect_timeout": 2}
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=1, socket_connect_timeout=1)
        self.experiments: dict[str, ExperimentLeads] = defaultdict(ExperimentLeads)
        self.pending: dict[str, str] = {}  # trace id -> experiment, not yet seen terminal
        self.terminal: dict[str, tuple[str, float]] = {}  # trace id -> (status, seen at)
        self.on_the_way: dict[str, str] = {}  # trace id -> "status/tier" last seen, if stored
        self.samples: list[Sample] = []
        self.accepted_total = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._thread = threading.Thread(target=self._poll_loop, name="tracker", daemon=True)
        self._thread.start()

    def accepted(self, experiment: str, tenant: str, trace_ids: list[str], at: float) -> None:
        with self._lock:
            leads = self.experiments[experiment]
            for trace_id in trace_ids:
                leads.accepted_at[trace_id] = at
                leads.tenant[trace_id] = tenant
                self.pending[trace_id] = experiment
            self.accepted_total += len(trace_ids)

    def pending_of(self, experiment: str) -> int:
        with self._lock:
            return sum(1 for name in self.pending.values() if name == experiment)

    def pending_total(self) -> int:
        return len(self.pending)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=10)
        if self._conn is not None:
            self._conn.close()

    # -- polling -------------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._closing.wait(POLL_SECONDS):
            self.poll()

    def poll(self) -> bool:
        with self._lock:
            waiting = list(self.pending)
            accepted = self.accepted_total
        polled = True
        if waiting:
            try:
                found = self.statuses(waiting)
            except psycopg.Error:
                polled = False
                found = {}
            now = time.monotonic()
            with self._lock:
                for trace_id, (status, tier) in found.items():
                    if trace_id not in self.pending:
                        continue
                    if status in TERMINAL_STATUSES:
                        del self.pending[trace_id]
                        self.on_the_way.pop(trace_id, None)
                        self.terminal[trace_id] = (status, now)
                    else:
                        self.on_the_way[trace_id] = f"{status}/{tier}"
        try:
            gauges = redis_gauges(self.redis)
        except redis.RedisError:
            gauges = None
        with self._lock:
            self.samples.append(
                Sample(time.monotonic(), accepted, len(self.pending), polled, gauges)
            )
        return polled

    def statuses(self, trace_ids: list[str]) -> dict[str, tuple[str, str]]:
        """trace id -> (status, tier), for the ones that have a row."""
        found: dict[str, tuple[str, str]] = {}
        conn = self._connection()
        try:
            for start in range(0, len(trace_ids), CHUNK):
                rows = conn.execute(
                    "SELECT trace_id::text, status, tier FROM leads_lead "
                    "WHERE trace_id = ANY(%s::uuid[])",
                    [trace_ids[start : start + CHUNK]],
                ).fetchall()
                found.update((trace_id, (status, tier)) for trace_id, status, tier in rows)
        except psycopg.Error:
            self._conn = None
            conn.close()
            raise
        return found

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(**self.conninfo, autocommit=True)
        return self._conn

    # -- figures -------------------------------------------------------------------------------
    def recovered_at(self, experiment: str, accepted_before: float) -> float | None:
        """When the last lead the experiment accepted before `accepted_before` became terminal
        (as the poller saw it), or None while one is not."""
        with self._lock:
            latest = 0.0
            for trace_id, at in self.experiments[experiment].accepted_at.items():
                if at > accepted_before:
                    continue
                done = self.terminal.get(trace_id)
                if done is None:
                    return None
                latest = max(latest, done[1])
            return latest

    def terminal_counts(self, experiment: str) -> dict[str, dict[str, int]]:
        """tenant -> outcome -> leads ("not terminal" for the ones still on their way)."""
        counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        with self._lock:
            leads = self.experiments[experiment]
            for trace_id, tenant in leads.tenant.items():
                done = self.terminal.get(trace_id)
                counts[tenant][done[0] if done else "not terminal"] += 1
        return {tenant: dict(sorted(c.items())) for tenant, c in sorted(counts.items())}

    def stuck_where(self, experiment: str) -> dict[str, int]:
        """The experiment's leads not yet terminal, by the status/tier last seen ("no row" for
        the ones PostgreSQL does not have)."""
        with self._lock:
            where = Counter(
                self.on_the_way.get(trace_id, "no row")
                for trace_id, name in self.pending.items()
                if name == experiment
            )
        return dict(where.most_common())

    def stuck_sample(self, experiment: str, count: int = 20) -> dict[str, str]:
        """A few of the experiment's leads not yet terminal, to look for in the logs."""
        with self._lock:
            found = [t for t, name in self.pending.items() if name == experiment][:count]
            return {t: self.on_the_way.get(t, "no row") for t in found}

    def trace_ids(self, experiment: str) -> list[str]:
        with self._lock:
            return list(self.experiments[experiment].accepted_at)
