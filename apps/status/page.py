"""The operators' live status page in Django admin (/admin/status/): the mode and why, each tier's
backlog (waiting and in flight) and lag with its last 15 minutes drawn in inline SVG, its
arrivals against what was forecast for them 5 minutes before, the replicas each pool needs, the
queues and workers, the laggiest tenants, backlog and credits per tenant, breakers, recent
transitions, and dead letters with their replay. Reloads itself every 5 s; reads only (Redis
and a few indexed queries), never writes.
"""

import time
from dataclasses import dataclass

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import reverse

from apps.control.history import HISTORY_SECONDS, history_read
from apps.control.models import ControlEvent, Mode, Policy
from apps.control.modes import Shedding
from apps.crm.models import DeadLetter
from apps.intake.selectors import admission_state
from apps.status import selectors
from apps.tenants.models import Tenant
from leadflow.queues import POOLS, TIERS
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import (
    CONTROL_SCALING_KEY,
    CONTROL_STATE_KEY,
    METRICS_TENANT_RANKING_KEY,
)

# The lag each tier should stay under, drawn on its chart (the alert rules use the same).
LAG_SLO_SECONDS = {"critical": 5.0, "normal": 30.0}
TENANT_ROWS = 25
LAGGIEST_ROWS = 10
# A tenant's oldest lead waiting longer than this is marked (the alert LeadFlowTenantLagHigh).
TENANT_LAG_ALERT_SECONDS = 300.0
CHART_WIDTH, CHART_HEIGHT = 360, 70
REFRESH_SECONDS = 5


@dataclass(frozen=True)
class Chart:
    points: str  # SVG polyline points
    slo_y: float | None  # y of the SLO line, None when the tier has none
    top: float  # the value at the top of the chart (seconds)
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    forecast_points: str = ""  # a second polyline: what was forecast for each moment


FORECAST_HORIZON_SECONDS = 300  # the status page draws the 5-minute forecast


def lag_chart(samples: list[dict], tier: str, now: float) -> Chart:
    """The tier's lag over the last 15 minutes as SVG coordinates: x is time, y the lag."""
    slo = LAG_SLO_SECONDS.get(tier)
    values = [(s["at"], s["tiers"].get(tier, {}).get("lag", 0.0)) for s in samples]
    top = max([lag for _, lag in values] + [slo or 0.0, 1.0]) * 1.1
    start = now - HISTORY_SECONDS

    def y(value: float) -> float:
        return round(CHART_HEIGHT - value / top * CHART_HEIGHT, 1)

    points = " ".join(
        f"{round((at - start) / HISTORY_SECONDS * CHART_WIDTH, 1)},{y(lag)}" for at, lag in values
    )
    return Chart(points=points, slo_y=y(slo) if slo else None, top=top)


def forecast_chart(samples: list[dict], tier: str, now: float) -> Chart:
    """The tier's arrival rate over the last 15 minutes, and the rate forecast for each moment
    5 minutes before it (each sample's forecast drawn 5 minutes later): y is leads/s."""
    start = now - HISTORY_SECONDS
    actual = [(s["at"], s["tiers"].get(tier, {}).get("arrivals", 0.0)) for s in samples]
    forecast = [
        (s["at"] + FORECAST_HORIZON_SECONDS, s["tiers"].get(tier, {}).get("forecast_5m", 0.0))
        for s in samples
        if s["at"] + FORECAST_HORIZON_SECONDS <= now
    ]
    top = max([rate for _, rate in actual + forecast] + [1.0]) * 1.1

    def points(values: list[tuple[float, float]]) -> str:
        return " ".join(
            f"{round((at - start) / HISTORY_SECONDS * CHART_WIDTH, 1)},"
            f"{round(CHART_HEIGHT - rate / top * CHART_HEIGHT, 1)}"
            for at, rate in values
        )

    return Chart(points=points(actual), slo_y=None, top=top, forecast_points=points(forecast))


def _scaling() -> dict:
    """The forecast figures and the replicas the controller last published (or froze)."""
    figures = {k.decode(): int(v) for k, v in get_redis().hgetall(CONTROL_SCALING_KEY).items()}
    return {
        "replicas": [(pool, figures.get(f"replicas.{pool}", 0)) for pool in POOLS],
        "forecast_backlog": {tier: figures.get(f"forecast.a.{tier}", 0) for tier in TIERS},
    }


def _tenant_rows(inboxes: dict) -> tuple[list[dict], int]:
    """The tenants with leads waiting, then the busiest (the metrics' ranking), at most
    TENANT_ROWS: backlog per tier, credits left, budget used this hour."""
    backlogs = selectors.tenant_backlogs(inboxes)
    ranked = [int(t) for t in get_redis().lrange(METRICS_TENANT_RANKING_KEY, 0, TENANT_ROWS - 1)]
    waiting = sorted(backlogs, key=lambda t: (-sum(backlogs[t].values()), t))
    ids = list(dict.fromkeys(waiting + ranked))
    if not ids:
        ids = list(Tenant.objects.order_by("id").values_list("id", flat=True)[:TENANT_ROWS])
    tenants = Tenant.objects.in_bulk(ids[:TENANT_ROWS])
    rows = []
    for tenant_id in ids[:TENANT_ROWS]:
        tenant = tenants.get(tenant_id)
        if tenant is None:
            continue
        state = admission_state(tenant)
        backlog = backlogs.get(tenant_id, dict.fromkeys(TIERS, 0))
        rows.append(
            {
                "tenant": tenant,
                "backlog": [backlog[tier] for tier in TIERS],
                "total": sum(backlog.values()),
                "credits": state.critical_credits,
                "credits_low": state.critical_credits < 1,
                "budget_used": state.budget_used,
            }
        )
    return rows, max(len(ids) - TENANT_ROWS, 0)


def _laggiest_rows(inboxes: dict) -> list[dict]:
    """The tenant inboxes whose oldest lead has waited longest (a tenant starved while its tier
    looks fine shows here first), at most LAGGIEST_ROWS."""
    laggiest = selectors.tenants_laggiest(inboxes, LAGGIEST_ROWS)
    names = dict(
        Tenant.objects.filter(id__in={t for t, _, _ in laggiest}).values_list("id", "name")
    )
    return [
        {
            "tenant_id": tenant_id,
            "name": names.get(tenant_id, f"#{tenant_id}"),
            "tier": tier,
            "lag": inbox.lag_seconds,
            "waiting": inbox.waiting,
            "over": inbox.lag_seconds > TENANT_LAG_ALERT_SECONDS,
        }
        for tenant_id, tier, inbox in laggiest
    ]


def _breaker_rows() -> list[dict]:
    states = selectors.breaker_states(selectors.breaker_names())
    tenant_ids = [int(name[4:]) for name in states if name.startswith("crm:")]
    names = dict(Tenant.objects.filter(id__in=tenant_ids).values_list("id", "name"))
    rows = [
        {
            "name": name,
            "what": "AI provider" if name == "ai" else f"CRM of {names.get(int(name[4:]), '?')}",
            "state": state,
        }
        for name, state in states.items()
    ]
    # Open first: what needs a look comes first.
    return sorted(rows, key=lambda row: (row["state"] == "closed", row["name"]))


def status_context() -> dict:
    now = time.time()
    shedding = Shedding.from_redis(get_redis().hgetall(CONTROL_STATE_KEY))
    samples = history_read()
    latest = samples[-1] if samples else None
    tiers = []
    for tier in TIERS:
        figures = latest["tiers"].get(tier, {}) if latest else {}
        lag = figures.get("lag", 0.0)
        slo = LAG_SLO_SECONDS.get(tier)
        tiers.append(
            {
                "tier": tier,
                "backlog": figures.get("backlog", 0),  # waiting or in flight
                "inflight": figures.get("inflight", 0),
                "lag": lag,
                "drain": figures.get("drain", 0.0),
                "slo": slo,
                "over_slo": slo is not None and lag > slo,
                "chart": lag_chart(samples, tier, now),
                "arrivals": figures.get("arrivals", 0.0),
                "forecast_5m": figures.get("forecast_5m", 0.0),
                "forecast_chart": forecast_chart(samples, tier, now),
            }
        )
    queues = selectors.queue_figures()
    workers = selectors.pool_workers()
    pools = [
        {
            "pool": pool,
            "workers": workers[pool],
            "queues": [(tier, queues[f"{pool}.{tier}"]) for tier in TIERS],
        }
        for pool in POOLS
    ]
    inboxes = selectors.tenant_inboxes()
    tenant_rows, tenants_more = _tenant_rows(inboxes)
    open_dead = DeadLetter.objects.filter(replayed_at__isnull=True)
    dead_letters_url = reverse("admin:crm_deadletter_changelist")
    return {
        "mode": shedding.mode,
        "modes": Mode.values,
        "shedding": shedding,
        "policy": Policy.current(),
        "why": ControlEvent.objects.exclude(kind=ControlEvent.Kind.OVERRIDE).first(),
        "measured_at": latest["at"] if latest else None,
        "measured_age": now - latest["at"] if latest else None,
        "tiers": tiers,
        "pools": pools,
        "scaling": _scaling(),
        "tenant_rows": tenant_rows,
        "tenants_more": tenants_more,
        "laggiest": _laggiest_rows(inboxes),
        "tenant_lag_alert_seconds": TENANT_LAG_ALERT_SECONDS,
        "tiers_names": TIERS,
        "breakers": _breaker_rows(),
        "events": ControlEvent.objects.all()[:10],
        "dead_letters_open": open_dead.count(),
        "dead_letters": open_dead.select_related("tenant")[:10],
        "dead_letters_url": dead_letters_url,
        "refresh_seconds": REFRESH_SECONDS,
    }


def status_view(request):
    """GET /admin/status/ (staff only: wrapped by admin.site.admin_view in leadflow/urls.py)."""
    context = {**admin.site.each_context(request), "title": "LeadFlow status", **status_context()}
    return TemplateResponse(request, "control/status.html", context)
