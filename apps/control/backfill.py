"""Backfill: the deferred ledger's open work is sent to the pools' LOW queues, in NORMAL mode
while LOW runs, a bounded number of rows per pass. A row sent and not done within
LEADFLOW_BACKFILL_RETRY_SECONDS is sent again (its stage is idempotent).

Degraded enrichments (the AI provider failed, local rules stood in) are the exception: they wait
for the provider to be back, which is an event (leadflow/breakers.py records it once): the AI
breaker closing after an outage, or the first answer after failures too few to open it; not a
timer. Those degraded before it are then sent, each once; while the breaker is open none is,
and a lead degraded again waits for the next recovery. So that the provider's return is seen
even when no fresh lead needs it, pool B is asked to probe it (ai_provider_probe) once per
breaker reset period while degraded leads wait and the provider has not answered since it
failed.
"""

from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pybreaker
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from apps.control.ledger import period_defer
from apps.control.models import DeferredKind, DeferredReason, DeferredWork
from apps.control.modes import Shedding
from leadflow import handoff
from leadflow.breakers import breaker_failing, breaker_recovered_at, breaker_state
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import AI_PROBE_KEY


def deferred_backfill() -> int:
    """Send up to LEADFLOW_BACKFILL_BATCH open ledger rows on; returns how many."""
    now = timezone.now()
    retry_before = now - timedelta(seconds=settings.BACKFILL_RETRY_SECONDS)
    due = Q(sent_at__isnull=True) | Q(sent_at__lt=retry_before)
    rows = list(
        DeferredWork.objects.filter(due, done_at__isnull=True)
        # A lead waiting for both goes to enrichment first, which delivers it after; a lead
        # with a degraded enrichment has one, and is delivered with it meanwhile.
        .exclude(
            kind=DeferredKind.CRM_SYNC,
            lead__enrichment_deferred=True,
            lead__enrichment__isnull=True,
        )
        .exclude(_degraded_not_due())
        .order_by("created_at")
        .values_list("id", "kind", "tenant_id", "lead_id", "period_start")[
            : settings.BACKFILL_BATCH
        ]
    )
    lead_ids: dict[str, list[str]] = defaultdict(list)
    for _, kind, tenant_id, lead_id, period_start in rows:
        if lead_id is not None:
            lead_ids[kind].append(str(lead_id))
        else:
            handoff.send_report(tenant_id, kind, period_start)
    handoff.send_to_enrich(lead_ids[DeferredKind.ENRICHMENT], "low", deferred=True)
    handoff.send_to_sync(lead_ids[DeferredKind.CRM_SYNC], "low")
    DeferredWork.objects.filter(id__in=[row[0] for row in rows]).update(sent_at=now)
    return len(rows)


def _degraded_not_due() -> Q:
    """The degraded enrichments that wait for the AI provider to be back: all while its
    breaker is not closed; once it is, those degraded since the provider last recovered."""
    degraded = Q(reason=DeferredReason.AI_DEGRADED)
    closed = breaker_state("ai") == pybreaker.STATE_CLOSED
    if not closed or breaker_failing("ai"):
        _ai_probe_ask()
    if not closed:
        return degraded
    recovered = breaker_recovered_at("ai")
    if recovered is None:  # never recovered since its keys were made: nothing is due yet
        return degraded & Q(sent_at__isnull=True)
    since = datetime.fromtimestamp(recovered, UTC)
    return degraded & Q(sent_at__isnull=True, created_at__gt=since)


def _ai_probe_ask() -> None:
    """One probe per reset period at most, however many passes or control processes ask."""
    waiting = DeferredWork.objects.filter(reason=DeferredReason.AI_DEGRADED, done_at__isnull=True)
    if not waiting.exists():
        return
    if get_redis().set(AI_PROBE_KEY, 1, nx=True, ex=max(int(settings.BREAKER_RESET_SECONDS), 1)):
        handoff.send_ai_probe()


def report_sender(shedding: Shedding):
    """What reports_schedule sends a due report with: to pool C's LOW queue, or, while LOW is
    paused (its queues receive nothing), to the ledger, to be built when LOW resumes."""
    if "low" not in shedding.paused_tiers:
        return handoff.send_report

    def report_hold(tenant_id: int, kind: str, period_start) -> None:
        period_defer(kind, tenant_id, period_start, shedding.mode, DeferredReason.PAUSED)

    return report_hold
