"""Operational endpoints: liveness, readiness, and the backlog KEDA scales the pools on.

Plain Django views, outside DRF, so the API key authentication never applies to them. The
public listener serves /healthz and /readyz, which say nothing an outsider could use (which
dependency is down, never its address or error); the operator listener (apps/health/
operator.py) serves /readyz with each check's error and /scaling/backlog.
"""

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from apps.health.checks import UNAVAILABLE, readiness
from leadflow.queues import POOLS, TIERS
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import CONTROL_SCALING_KEY, CONTROL_STATE_KEY


@require_GET
def healthz(request):
    """The process is up and serving requests; no I/O, so a slow dependency never kills it."""
    return JsonResponse({"status": "alive"})


def _readiness_answer(details: bool) -> JsonResponse:
    result = readiness()
    body = {
        "status": result.status,
        "failed": [check.name for check in result.checks if not check.ok],
        "checks": {
            check.name: check.detail if details else ("ok" if check.ok else "failed")
            for check in result.checks
        },
    }
    return JsonResponse(body, status=503 if result.status == UNAVAILABLE else 200)


@require_GET
def readyz(request):
    """200 while this process can serve the intake (Redis answers; PostgreSQL down is reported,
    "degraded", as long as known keys can be served); 503 naming what failed otherwise. Each
    check is "ok" or "failed": its error (hosts, ports, messages) is for operators only."""
    return _readiness_answer(details=False)


@require_GET
def readyz_details(request):
    """The same, on the operator listener, with each failed check's error."""
    return _readiness_answer(details=True)


@require_GET
def backlog(request):
    """The work waiting for each pool and tier, for KEDA's metrics-api scaler (no tenant data):
    {"a": {"critical": n, "normal": n, "low": n}, "b": {...}, "c": {...},
     "forecast": {"a": {...}, "b": {...}, "c": {...}}, "replicas": {"a": n, ...}, "frozen": bool}.

    Pool A's figures are leads in the inboxes or in flight (claimed by the dispatcher, not
    yet stored: the dispatcher keeps a.* a few messages deep whatever the backlog, so their
    length says nothing); B's and C's are messages in their queues. The controller writes them
    every second, except while an operator's stop-scaling switch is on: then they stay as they
    were, and so do the pools' sizes.

    "forecast" holds the same figures 5 minutes ahead if the pools kept their size
    (apps/control/forecast.py); KEDA has a trigger on each and scales on the larger.
    "replicas" is the size each pool needs by the larger, as KEDA computes it.
    """
    pipe = get_redis().pipeline(transaction=False)
    pipe.hgetall(CONTROL_SCALING_KEY)
    pipe.hget(CONTROL_STATE_KEY, "stop_scaling")
    figures, frozen = pipe.execute()

    def figure(name: str) -> int:
        return int(figures.get(name.encode(), 0))

    body: dict = {pool: {tier: figure(f"{pool}.{tier}") for tier in TIERS} for pool in POOLS}
    body["forecast"] = {
        pool: {tier: figure(f"forecast.{pool}.{tier}") for tier in TIERS} for pool in POOLS
    }
    body["replicas"] = {pool: figure(f"replicas.{pool}") for pool in POOLS}
    body["frozen"] = frozen == b"True"
    return JsonResponse(body)
