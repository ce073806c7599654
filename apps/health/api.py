"""Operational endpoints: liveness, readiness, and the backlog KEDA scales pool A on.

Plain Django views, outside DRF, so the API key authentication never applies to them.
"""

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from apps.health.checks import readiness_checks
from apps.intake.inbox import BACKLOG_KEY
from leadflow.redis_conn import get_redis
from workers.queues import TIERS


@require_GET
def healthz(request):
    """The process is up and serving requests; no I/O, so a slow dependency never kills it."""
    return JsonResponse({"status": "alive"})


@require_GET
def readyz(request):
    """200 when Redis and PostgreSQL answer within the timeout; 503 naming the ones that did not."""
    results = readiness_checks()
    failed = [result.name for result in results if not result.ok]
    body = {
        "status": "unavailable" if failed else "ready",
        "failed": failed,
        "checks": {result.name: result.detail for result in results},
    }
    return JsonResponse(body, status=503 if failed else 200)


@require_GET
def backlog(request):
    """Leads waiting in the inboxes per tier, for KEDA's metrics-api scaler (no tenant data).

    Pool A scales on this and not on its Celery queues: the dispatcher keeps a.* a few
    messages deep whatever the backlog, so their length says nothing about the load.
    """
    counts = [int(count or 0) for count in get_redis().hmget(BACKLOG_KEY, list(TIERS))]
    waiting = dict(zip(TIERS, counts, strict=True))
    return JsonResponse({**waiting, "total": sum(counts)})
