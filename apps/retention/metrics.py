"""Retention's and erasure's Prometheus metrics (README "Retention").

The retention job runs in the control process, whose metrics server serves a registry of its
own (apps/control/metrics.py): its collector is made here and registered there.
Erasures happen in the API (and the admin), whose /metrics serves the default registry.
"""

import threading

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from leadflow.metrics import tenant_label


class RetentionCollector:
    """The job's figures, kept in memory and exported as Prometheus families on scrape: no
    prometheus_client value objects (in a process with PROMETHEUS_MULTIPROC_DIR, pool A's, an
    unlabelled one would make a file at import)."""

    FAMILIES = {
        "leadflow_retention_anonymized_leads": (
            "Leads whose personal data and payload the retention job cleared, by tenant (top N, "
            "else other).",
            ["tenant"],
        ),
        "leadflow_retention_runs": (
            "Runs of the retention job: complete (caught up) or partial (its time was up).",
            ["outcome"],
        ),
        "leadflow_retention_last_run_timestamp_seconds": (
            "When the retention job last finished a run (epoch).",
            [],
        ),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.anonymized: dict[str, float] = {}
        self.runs: dict[str, float] = {"complete": 0, "partial": 0}
        self.last_run = 0.0

    def counted(self, by_tenant: dict[int, int], complete: bool, finished_at: float) -> None:
        with self._lock:
            for tenant_id, n in by_tenant.items():
                label = tenant_label(tenant_id)
                self.anonymized[label] = self.anonymized.get(label, 0) + n
            self.runs["complete" if complete else "partial"] += 1
            self.last_run = finished_at

    def describe(self):
        return [self._family(name) for name in self.FAMILIES]

    def collect(self):
        anonymized = self._family("leadflow_retention_anonymized_leads")
        runs = self._family("leadflow_retention_runs")
        last_run = self._family("leadflow_retention_last_run_timestamp_seconds")
        with self._lock:
            for label, n in sorted(self.anonymized.items()):
                anonymized.add_metric([label], n)
            for outcome, n in self.runs.items():
                runs.add_metric([outcome], n)
            last_run.add_metric([], self.last_run)
        return [anonymized, runs, last_run]

    def _family(self, name: str):
        help_text, labels = self.FAMILIES[name]
        kind = GaugeMetricFamily if name.endswith("_seconds") else CounterMetricFamily
        return kind(name, help_text, labels=labels)


# Registered on the control process's registry (apps/control/metrics.py).
retention_collector = RetentionCollector()

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
    retention_collector.counted(by_tenant, complete, finished_at)


def erasure_counted(via: str, leads: int) -> None:
    ERASURES.labels(via).inc()
    if leads:
        ERASED_LEADS.labels(via).inc(leads)
