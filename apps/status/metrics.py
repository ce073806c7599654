"""The control process's metrics (README "Metrics"), served on LEADFLOW_CONTROL_METRICS_PORT.

Computed on scrape by a custom Collector rather than set as gauges each tick: the tick runs on
the dispatcher's loop, where every millisecond delays leads, while a scrape comes every 15 s on
the metrics server's own thread; and nothing is read when nobody scrapes. The per-tier figures
are the controller's last tick (at most a second old), so the lag charted is the lag the mode
machine acted on; the rest (queues, republished batches, ledger, tenants, breakers, dead letters,
workers) is read from Redis and PostgreSQL at scrape time.

Only the active instance (the leader) exports the platform's figures; a standby exports
leadflow_control_leader 0 and nothing else, so sums over replicas do not double. The leader also
ranks tenants by volume for the tenant labels every process uses (leadflow/metrics.py).
"""

import logging
import threading
import time

from django.conf import settings
from django.db import connections
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from apps.control.dispatcher import inflight_republished
from apps.control.models import DeferredKind, DeferredReason, Mode, Policy
from apps.control.outages import DEPENDENCY_ERRORS
from apps.intake.selectors import admission_state
from apps.retention.metrics import retention_collector
from apps.status import selectors
from apps.tenants.models import Tenant
from leadflow.metrics import OTHER_TENANT, metrics_serve, tenant_label
from leadflow.queues import TIERS
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import METRICS_TENANT_RANKING_KEY

log = logging.getLogger(__name__)

# name -> (help, label names): the families this process exports.
FAMILIES = {
    "leadflow_control_leader": ("1 on the active control instance, 0 on a standby.", []),
    "leadflow_control_tick_timestamp_seconds": ("When the controller last ticked (epoch).", []),
    "leadflow_tier_backlog": (
        "Leads waiting in the inboxes or in flight (claimed by the dispatcher, not yet stored "
        "by pool A), per tier.",
        ["tier"],
    ),
    "leadflow_tier_inflight": (
        "Leads in flight: claimed by the dispatcher, not yet stored by pool A, per tier.",
        ["tier"],
    ),
    "leadflow_inflight_republished_batches": (
        "In-flight batches published again because pool A had not stored them within "
        "LEADFLOW_INFLIGHT_REPUBLISH_SECONDS, per tier (a counter, exposed as *_total).",
        ["tier"],
    ),
    "leadflow_tier_lag_seconds": (
        "Age of the oldest lead waiting or in flight, per tier.",
        ["tier"],
    ),
    "leadflow_tier_drain_rate": (
        "Leads/s leaving the inboxes for pool A, per tier (EWMA, measured while leads wait).",
        ["tier"],
    ),
    "leadflow_tier_arrival_rate": (
        "Leads/s arriving in a tier's inboxes, over the forecast's last 10 s step.",
        ["tier"],
    ),
    "leadflow_forecast_arrival_rate": (
        "Leads/s forecast to arrive per tier, 5 and 10 minutes ahead (damped Holt's trend).",
        ["tier", "horizon"],
    ),
    "leadflow_forecast_backlog": (
        "Backlog forecast per tier 5 and 10 minutes ahead if the pools kept their size.",
        ["tier", "horizon"],
    ),
    "leadflow_pool_desired_replicas": (
        "Replicas a pool needs by the larger of its current and forecast figures (as KEDA "
        "computes them; held while scaling is frozen).",
        ["pool"],
    ),
    "leadflow_queue_messages": ("Messages waiting in a pool's Celery queue.", ["pool", "tier"]),
    "leadflow_queue_lag_seconds": (
        "Age of the oldest message waiting in a pool's Celery queue.",
        ["pool", "tier"],
    ),
    "leadflow_mode": ("1 for the platform's current mode, 0 for the others.", ["mode"]),
    "leadflow_mode_forced": ("1 while an operator forces the mode (overload policy).", []),
    "leadflow_low_paused": ("1 while LOW work is paused.", []),
    "leadflow_sampling_percent": (
        "Share of non-critical leads that go on past qualification (100 but in severe).",
        [],
    ),
    "leadflow_feature_shed": (
        "1 while a feature is shed: crm_throttle, enrichment (all tiers), "
        "enrichment_non_critical, reports, analytics.",
        ["feature"],
    ),
    "leadflow_deferred_open": (
        "Open rows of the deferred ledger (work shed or degraded, to redo).",
        ["kind", "reason"],
    ),
    "leadflow_tenant_backlog": (
        "Leads waiting in a tenant's inboxes, per tier (the busiest tenants, the rest summed "
        "as other).",
        ["tenant", "tier"],
    ),
    "leadflow_tenant_lag_seconds": (
        "Age of the oldest lead waiting in a tenant's inbox, per tier (the busiest tenants; "
        "other: the oldest among the rest). Only tenants with leads waiting have a series.",
        ["tenant", "tier"],
    ),
    "leadflow_tenant_critical_credits": (
        "Critical credits a tenant has left (the busiest tenants only).",
        ["tenant"],
    ),
    "leadflow_breaker_state": (
        "Circuit breakers in each state, per dependency: ai, crm:<tenant> (crm:other counts "
        "the rest).",
        ["dependency", "state"],
    ),
    "leadflow_dead_letters": ("Dead letters, open (to replay) and replayed.", ["state"]),
    "leadflow_pool_workers": ("Workers of a pool alive (heartbeat in the last 10 s).", ["pool"]),
}


# Counters among FAMILIES: named there as prometheus_client names their family, without the
# _total its sample carries.
COUNTERS = frozenset({"leadflow_inflight_republished_batches"})


def _family(name: str) -> GaugeMetricFamily | CounterMetricFamily:
    help_text, labels = FAMILIES[name]
    kind = CounterMetricFamily if name in COUNTERS else GaugeMetricFamily
    return kind(name, help_text, labels=labels)


class ControlCollector:
    """Reads the platform's figures when Prometheus scrapes (see the module's docstring)."""

    def __init__(self, controller=None) -> None:
        self.controller = controller  # set while this instance leads; None on a standby

    def describe(self):
        return [_family(name) for name in FAMILIES]

    def collect(self):
        controller = self.controller
        leader = _family("leadflow_control_leader")
        leader.add_metric([], 1 if controller is not None else 0)
        yield leader
        if controller is None:
            return
        reads = (
            self._tiers,
            self._forecasts,
            self._republished,
            self._mode,
            self._queues,
            self._workers,
            self._tenants,
        )
        for read in reads:
            yield from self._guarded(read, controller)
        try:
            yield from self._guarded(self._records, controller)
        finally:
            connections.close_all()  # this scrape thread's own connection, never reused

    @staticmethod
    def _guarded(read, controller):
        # A dependency down must not fail the whole scrape: the figures of the others still go.
        # Its outage is logged by the control loop, once, not here at every scrape.
        try:
            return list(read(controller))
        except DEPENDENCY_ERRORS as error:
            log.debug("metrics: %s not read: %s", read.__name__, error)
            return []
        except Exception:
            log.warning("metrics: %s not read", read.__name__, exc_info=True)
            return []

    @staticmethod
    def _tiers(controller):
        tick = _family("leadflow_control_tick_timestamp_seconds")
        tick.add_metric([], controller.ticked_at)
        backlog, inflight, lag, drain = (
            _family(name)
            for name in (
                "leadflow_tier_backlog",
                "leadflow_tier_inflight",
                "leadflow_tier_lag_seconds",
                "leadflow_tier_drain_rate",
            )
        )
        for tier, measure in controller.measures.items():
            backlog.add_metric([tier], measure.backlog)
            inflight.add_metric([tier], measure.inflight)
            lag.add_metric([tier], measure.lag_seconds)
            drain.add_metric([tier], measure.drain_rate)
        return [tick, backlog, inflight, lag, drain]

    @staticmethod
    def _forecasts(controller):
        arrivals, rates, backlogs, replicas = (
            _family(name)
            for name in (
                "leadflow_tier_arrival_rate",
                "leadflow_forecast_arrival_rate",
                "leadflow_forecast_backlog",
                "leadflow_pool_desired_replicas",
            )
        )
        for tier, rate in controller.arrival_rates.items():
            arrivals.add_metric([tier], rate)
        for tier, forecast in controller.forecasts.items():
            for horizon, rate in forecast.rates.items():
                rates.add_metric([tier, horizon], rate)
                backlogs.add_metric([tier, horizon], forecast.backlogs[horizon])
        for pool, count in controller.replicas.items():
            replicas.add_metric([pool], count)
        return [arrivals, rates, backlogs, replicas]

    @staticmethod
    def _republished(controller):
        republished = _family("leadflow_inflight_republished_batches")
        for tier, count in inflight_republished().items():
            republished.add_metric([tier], count)
        return [republished]

    @staticmethod
    def _mode(controller):
        shedding = controller.shedding
        if shedding is None:  # before the first tick
            return []
        mode = _family("leadflow_mode")
        for value in Mode.values:
            mode.add_metric([value], 1 if shedding.mode == value else 0)
        low, sampling = _family("leadflow_low_paused"), _family("leadflow_sampling_percent")
        low.add_metric([], 1 if shedding.low_paused else 0)
        sampling.add_metric([], shedding.sampling_percent)
        shed = _family("leadflow_feature_shed")
        for feature, on in (
            ("crm_throttle", shedding.crm_throttled),
            ("enrichment", shedding.enrichment == "off"),
            ("enrichment_non_critical", shedding.enrichment != "on"),
            ("reports", not shedding.reports),
            ("analytics", not shedding.analytics),
        ):
            shed.add_metric([feature], 1 if on else 0)
        return [mode, low, sampling, shed]

    @staticmethod
    def _queues(controller):
        messages, lag = _family("leadflow_queue_messages"), _family("leadflow_queue_lag_seconds")
        for name, figure in selectors.queue_figures().items():
            pool, tier = name.split(".")
            messages.add_metric([pool, tier], figure.messages)
            lag.add_metric([pool, tier], figure.lag_seconds)
        return [messages, lag]

    @staticmethod
    def _workers(controller):
        workers = _family("leadflow_pool_workers")
        for pool, alive in selectors.pool_workers().items():
            workers.add_metric([pool], alive)
        return [workers]

    @staticmethod
    def _tenants(controller):
        inboxes = selectors.tenant_inboxes()
        backlog = _family("leadflow_tenant_backlog")
        sums: dict[tuple[str, str], int] = {(OTHER_TENANT, tier): 0 for tier in TIERS}
        for tenant_id, tiers in selectors.tenant_backlogs(inboxes).items():
            label = tenant_label(tenant_id)
            for tier, waiting in tiers.items():
                sums[(label, tier)] = sums.get((label, tier), 0) + waiting
        for (label, tier), waiting in sorted(sums.items()):
            backlog.add_metric([label, tier], waiting)
        lag = _family("leadflow_tenant_lag_seconds")
        for (label, tier), seconds in sorted(tenant_lags(inboxes).items()):
            lag.add_metric([label, tier], seconds)
        return [backlog, lag]

    @staticmethod
    def _records(controller):
        forced = _family("leadflow_mode_forced")
        forced.add_metric([], 1 if Policy.current().forced_mode else 0)

        ledger = _family("leadflow_deferred_open")
        counts = selectors.deferred_open()
        for kind in DeferredKind.values:
            for reason in DeferredReason.values:
                ledger.add_metric([kind, reason], counts.get((kind, reason), 0))

        dead = _family("leadflow_dead_letters")
        for state, n in selectors.dead_letter_counts().items():
            dead.add_metric([state], n)

        breakers = _family("leadflow_breaker_state")
        counts = {}
        for name, state in selectors.breaker_states(selectors.breaker_names()).items():
            dependency = name
            if name.startswith("crm:"):
                dependency = f"crm:{tenant_label(name[4:])}"
            for each in selectors.BREAKER_STATES:
                counts.setdefault((dependency, each), 0)
            counts[(dependency, state)] = counts.get((dependency, state), 0) + 1
        for (dependency, state), n in sorted(counts.items()):
            breakers.add_metric([dependency, state], n)

        credits = _family("leadflow_tenant_critical_credits")
        labelled = [t for t in _ranked_tenant_ids() if tenant_label(t) == str(t)]
        for tenant in Tenant.objects.filter(id__in=labelled).order_by("id"):
            credits.add_metric([str(tenant.id)], admission_state(tenant).critical_credits)
        return [forced, ledger, dead, breakers, credits]


def tenant_lags(
    inboxes: dict[int, dict[str, selectors.TenantInbox]],
) -> dict[tuple[str, str], float]:
    """(tenant label, tier) -> the age of the oldest lead waiting, for the inboxes that hold
    any. Tenants without a label of their own share `other`, which shows the oldest of theirs
    (a sum of ages would mean nothing). A tenant whose inbox drained has no series: its gauge
    is gone at the next scrape, not left at its last value."""
    lags: dict[tuple[str, str], float] = {}
    for tenant_id, tiers in inboxes.items():
        label = tenant_label(tenant_id)
        for tier, inbox in tiers.items():
            key = (label, tier)
            lags[key] = max(lags.get(key, 0.0), inbox.lag_seconds)
    return lags


def _ranked_tenant_ids() -> list[int]:
    raw = get_redis().lrange(METRICS_TENANT_RANKING_KEY, 0, settings.METRICS_TENANT_LABELS - 1)
    return [int(value) for value in raw]


def tenant_ranking(top_n: int) -> list[int]:
    """The active tenants by volume (leads accepted this hour + waiting; ties: the older tenant
    first), the top N."""
    tenant_ids = list(Tenant.objects.filter(is_active=True).values_list("id", flat=True))
    volumes = selectors.tenant_volumes(tenant_ids)
    return sorted(tenant_ids, key=lambda t: (-volumes[t], t))[:top_n]


def tenant_ranking_publish() -> list[int]:
    """Publish the ranking, whose ids every process uses as metric labels."""
    ranked = tenant_ranking(settings.METRICS_TENANT_LABELS)
    pipe = get_redis().pipeline(transaction=True)
    pipe.delete(METRICS_TENANT_RANKING_KEY)
    if ranked:
        pipe.rpush(METRICS_TENANT_RANKING_KEY, *ranked)
    pipe.execute()
    return ranked


collector = ControlCollector()


def leader_set(controller) -> None:
    """The run_control hook: this instance leads with `controller` (None: it no longer leads)."""
    collector.controller = controller


def serve() -> None:
    """The run_control hook at start: the metrics server, and the leader's tenant ranking."""
    registry = CollectorRegistry()
    registry.register(collector)
    registry.register(retention_collector)  # the retention job's, counted on the database thread
    ProcessCollector(registry=registry)
    metrics_serve(settings.CONTROL_METRICS_PORT, registry, "control")
    # Even with the server off: the API's and the pools' tenant labels follow the ranking.
    threading.Thread(target=_rank_while_leading, name="metrics-ranking", daemon=True).start()


def _rank_while_leading() -> None:
    while True:
        if collector.controller is not None:
            try:
                tenant_ranking_publish()
            except DEPENDENCY_ERRORS as error:  # logged once by the control loop
                log.debug("metrics: tenant ranking not published: %s", error)
            except Exception:
                log.warning("metrics: tenant ranking not published", exc_info=True)
            finally:
                connections.close_all()
        time.sleep(settings.METRICS_TENANT_REFRESH_SECONDS)
