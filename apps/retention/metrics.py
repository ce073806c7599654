"""Retention's and erasure's Prometheus metrics (README "Retention").

The retention job runs in the control process, whose metrics server serves a registry of its
own (apps/control/metrics.py): its metrics are made unregistered here and registered there.
Erasures happen in the API (and the admin), whose /metrics serves the default registry.
"""

from prometheus_client import Counter, Gauge

from leadflow.metrics import tenant_label

RETENTION_LEADS = Counter(
    "leadflow_retention_anonymized_leads",
    "Leads whose personal data and payload the retention job cleared, by tenant (top N, else "
    "other).",
    ["tenant"],
    registry=None,
)
RETENTION_RUNS = Counter(
    "leadflow_retention_runs",
    "Runs of the retention job: complete (caught up) or partial (its time was up).",
    ["outcome"],
    registry=None,
)
RETENTION_LAST_RUN = Gauge(
    "leadflow_retention_last_run_timestamp_seconds",
    "When the retention job last finished a run (epoch).",
    registry=None,
)
# For the control process's registry.
CONTROL_METRICS = (RETENTION_LEADS, RETENTION_RUNS, RETENTION_LAST_RUN)

ERASED_LEADS = Counter(
    "leadflow_erased_leads",
    "Leads deleted by erasure requests, by where the request came from (api, admin).",
    ["via"],
)
ERASURES = Counter(
    "leadflow_erasures",
    "Erasure requests served (a repeat counts, with no lead), by where they came from.",
    ["via"],
)


def retention_counted(by_tenant: dict[int, int], complete: bool, finished_at: float) -> None:
    for tenant_id, n in by_tenant.items():
        RETENTION_LEADS.labels(tenant_label(tenant_id)).inc(n)
    RETENTION_RUNS.labels("complete" if complete else "partial").inc()
    RETENTION_LAST_RUN.set(finished_at)


def erasure_counted(via: str, leads: int) -> None:
    ERASURES.labels(via).inc()
    if leads:
        ERASED_LEADS.labels(via).inc(leads)
