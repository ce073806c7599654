"""Prometheus metrics shared by every process: bounded tenant labels, the intake's decision
counters (called by the intake view), and a small metrics HTTP server for processes that are not
the API (the control process and the pools; the API serves /metrics through django-prometheus).

Intake, one call per decision (README "Metrics"):
    intake_decisions_count(tenant_id, tier, outcome, n=1, reason="")
    intake_errors_count(status, reason, n=1)
and, around the intake's fast POST path (plain WSGI, which Django's middleware, so
django-prometheus, never sees), `IntakeRequestMetrics` counts its requests by status and times them.

In a process tree that forks (gunicorn's workers, pool A's prefork children) the values live in
PROMETHEUS_MULTIPROC_DIR, which must be in the environment before prometheus_client is imported
(gunicorn.conf.py sets it for the API; the Procfile for pool A), and
`scrape_registry()` merges every process's files.
"""

import logging
import os
import re
import threading
import time

from django.conf import settings
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess

from leadflow.queues import TIERS
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import METRICS_TENANT_RANKING_KEY

log = logging.getLogger(__name__)

# The tenants that get a label of their own, best first (a Redis list of ids), ranked by the
# control process (apps/status/metrics.py); everybody else is "other".
OTHER_TENANT = "other"

INTAKE_OUTCOMES = ("accepted", "demoted", "duplicate", "rate_limited", "invalid")
INTAKE_LIMITS = ("ip_rate", "tenant_rate", "hourly_budget", "backpressure")
_REASON_OK = re.compile(r"^[a-z0-9_]{1,40}$")

INTAKE_DECISIONS = Counter(
    "leadflow_intake_decisions",
    "Leads the intake decided on, by tenant (top N, else other), tier and outcome: accepted, "
    "demoted (asked critical, accepted as normal), duplicate, rate_limited (reason: the limit), "
    "invalid (reason: the error code).",
    ["tenant", "tier", "outcome", "reason"],
)
INTAKE_ERRORS = Counter(
    "leadflow_intake_errors",
    "Intake requests answered 4xx before any lead was decided (bad key, malformed JSON, too "
    "large, wrong content type, anonymous rate limit), by status and error code.",
    ["status", "reason"],
)

INTAKE_REQUESTS = Counter(
    "leadflow_intake_requests",
    "Requests to the intake's POST endpoints (served before Django, so not in django_http_*), "
    "by path and status.",
    ["path", "status"],
)
INTAKE_LATENCY = Histogram(
    "leadflow_intake_request_duration_seconds",
    "Time to answer a request to the intake's POST endpoints, by path.",
    ["path"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
QUARANTINED = Counter(
    "leadflow_quarantined_leads",
    "Leads that failed a stage for a reason of their own and were quarantined (status failed), "
    "by stage (qualification, enrichment, crm), tenant (top N, else other) and reason (a short "
    "code, e.g. the error's type).",
    ["stage", "tenant", "reason"],
)
QUARANTINE_STAGES = ("qualification", "enrichment", "crm")
_CODE_OK = re.compile(r"^[A-Za-z0-9_]{1,40}$")


# --- tenant labels ---


class TenantLabels:
    """Which tenants get their own label in this process.

    A tenant in the published ranking gets its id; once given, a label stays for the process's
    life (its series do not flicker as the ranking moves), and a process never gives more than
    2 x N of them, so the series count is bounded whatever the tenants do. The ranking is read
    once at first use, then refreshed by a daemon thread: requests never wait on it.
    """

    def __init__(
        self, top_n: int, refresh_seconds: float, key: str = METRICS_TENANT_RANKING_KEY
    ) -> None:
        self.key = key
        self.top_n = top_n
        self.refresh_seconds = refresh_seconds
        self._ranked: frozenset[str] = frozenset()
        self._given: set[str] = set()
        self._lock = threading.Lock()
        self._pid: int | None = None

    def label(self, tenant_id: int | str) -> str:
        if self._pid != os.getpid():
            self._start()
        key = str(tenant_id)
        if key in self._given:
            return key
        if key in self._ranked:
            with self._lock:
                if len(self._given) < 2 * self.top_n:
                    self._given.add(key)
                    return key
        return OTHER_TENANT

    def refresh(self) -> None:
        """Read the published ranking now (the thread does it every refresh_seconds)."""
        try:
            ranked = get_redis().lrange(self.key, 0, self.top_n - 1)
        except Exception:  # Redis away: keep the last ranking; metrics must never fail a request
            log.debug("metrics: tenant ranking not read", exc_info=True)
            return
        self._ranked = frozenset(raw.decode() for raw in ranked)

    def _start(self) -> None:
        # Once per process (after a fork too: threads do not survive it).
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._given = set()
        self.refresh()
        threading.Thread(target=self._run, name="metrics-tenant-labels", daemon=True).start()

    def _run(self) -> None:
        pid = os.getpid()
        while self._pid == pid:
            time.sleep(self.refresh_seconds)
            self.refresh()


tenant_labels = TenantLabels(
    settings.METRICS_TENANT_LABELS, settings.METRICS_TENANT_REFRESH_SECONDS
)


def tenant_label(tenant_id: int | str) -> str:
    """The tenant's label value: its id if it is among the N busiest, else "other"."""
    return tenant_labels.label(tenant_id)


# --- the intake's decisions ---


def intake_decisions_count(
    tenant_id: int, tier: str, outcome: str, n: int = 1, reason: str = ""
) -> None:
    """Count n leads of one tenant decided the same way.

    tier: the tier the lead is in after the decision (a demoted lead: "normal").
    outcome: accepted | demoted | duplicate | rate_limited | invalid.
    reason: for rate_limited the limit (ip_rate, tenant_rate, hourly_budget, backpressure); for
    invalid the error code of the answer (e.g. "invalid_fields"); empty otherwise.
    A wrong value raises ValueError: label values are a closed set, so typos fail in tests.
    """
    label = tenant_label(tenant_id)
    child = _decision_counters.get((label, tier, outcome, reason))
    if child is None:
        child = _decision_counter(label, tier, outcome, reason)
    if n > 0:
        child.inc(n)


# (tenant label, tier, outcome, reason as given) -> its counter: the checks and prometheus'
# label lookup ran once (a few microseconds a request on the intake's hot path).
_decision_counters: dict[tuple[str, str, str, str], object] = {}


def _decision_counter(label: str, tier: str, outcome: str, reason: str):
    key = (label, tier, outcome, reason)
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    if outcome not in INTAKE_OUTCOMES:
        raise ValueError(f"outcome must be one of {INTAKE_OUTCOMES}, got {outcome!r}")
    if outcome == "rate_limited":
        if reason not in INTAKE_LIMITS:
            raise ValueError(f"a rate_limited reason is one of {INTAKE_LIMITS}, got {reason!r}")
    elif outcome == "invalid":
        reason = reason or "invalid"
        if not _REASON_OK.match(reason):
            raise ValueError(f"reason must be an error code ([a-z0-9_]), got {reason!r}")
    elif reason:
        raise ValueError(f"outcome {outcome!r} takes no reason, got {reason!r}")
    child = INTAKE_DECISIONS.labels(label, tier, outcome, reason)
    if len(_decision_counters) < 10_000:  # bounded: reasons are a closed set, tenants are not
        _decision_counters[key] = child
    return child


def intake_errors_count(status: int, reason: str, n: int = 1) -> None:
    """Count n intake requests answered `status` (4xx) with error code `reason` before any lead
    was decided: 401 unauthorized, 400 malformed JSON or too many leads, 413, 415, and the 429s of
    requests without a valid key (reason "ip_rate")."""
    if not 400 <= int(status) <= 499:
        raise ValueError(f"status must be a 4xx, got {status!r}")
    if not _REASON_OK.match(reason):
        raise ValueError(f"reason must be an error code ([a-z0-9_]), got {reason!r}")
    if n > 0:
        INTAKE_ERRORS.labels(str(int(status)), reason).inc(n)


def quarantined_count(tenant_id: int | str, stage: str, reason: str, n: int = 1) -> None:
    """Count n leads of one tenant quarantined at `stage`; `reason` is a short code
    ([A-Za-z0-9_], e.g. "DataError", "nul_character"), never free text."""
    if stage not in QUARANTINE_STAGES:
        raise ValueError(f"stage must be one of {QUARANTINE_STAGES}, got {stage!r}")
    if not _CODE_OK.match(reason):
        raise ValueError(f"reason must be a short code ([A-Za-z0-9_]), got {reason!r}")
    if n > 0:
        QUARANTINED.labels(stage, tenant_label(tenant_id), reason).inc(n)


class IntakeRequestMetrics:
    """WSGI middleware: counts and times the POSTs to `paths` (the intake's fast POST path), and
    passes every other request on untouched (Django counts those itself)."""

    def __init__(self, app, paths) -> None:
        self.app = app
        self.paths = frozenset(paths)
        self._latency = {path: INTAKE_LATENCY.labels(path) for path in self.paths}
        self._requests: dict[tuple[str, str], object] = {}

    def __call__(self, environ: dict, start_response):
        path = environ.get("PATH_INFO", "")
        if path not in self.paths or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        started = time.perf_counter()
        status = ["500"]

        def start(status_line, headers, exc_info=None):
            status[0] = status_line[:3]
            return start_response(status_line, headers, exc_info)

        try:
            return self.app(environ, start)
        finally:
            self._latency[path].observe(time.perf_counter() - started)
            key = (path, status[0])
            counter = self._requests.get(key)
            if counter is None:
                counter = self._requests[key] = INTAKE_REQUESTS.labels(path, status[0])
            counter.inc()


# --- serving ---


def scrape_registry() -> CollectorRegistry:
    """What a scrape of this process tree shows: every process's files in multiprocess mode,
    else this process's own metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def metrics_serve(port: int, registry: CollectorRegistry, what: str) -> bool:
    """Serve `registry` at http://METRICS_ADDRESS:port/metrics from a daemon thread.

    A port already taken (a second worker of the same pool on one host) is logged, not fatal:
    metrics are not worth stopping a worker or the controller for."""
    if not port:
        return False
    address = settings.METRICS_ADDRESS
    try:
        start_http_server(port, addr=address, registry=registry)
    except OSError as error:
        log.warning("metrics: %s cannot serve on %s:%d: %s", what, address, port, error)
        return False
    log.info("metrics: %s serves http://%s:%d/metrics", what, address, port)
    return True


def multiprocess_dir_reset(path: str) -> None:
    """Create the multiprocess directory, or empty it of a previous run's files (the
    prometheus_client docs: wipe it before the process tree starts)."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))
