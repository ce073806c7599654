"""Quarantine: a lead that fails a stage for a reason of its own ends `failed`, alone.

Its batch-mates and every other tenant's leads go on at once; the failed lead keeps the stage
and the reason (GET, admin, `leadflow_quarantined_leads_total`) until an operator replays it
after a fix. Only failures that are the lead's are quarantined: a dependency that is down
(PostgreSQL, Redis, a CRM) makes the batch retry instead.

Pool A's failures may be leads PostgreSQL cannot store as they are (that is often why they
failed), so their row holds what can be stored of each field and `failed_entry` keeps the inbox
entry as it came, in ASCII JSON, for the replay.
"""

import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import DataError, IntegrityError, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from apps.leads.models import Lead, LeadStage, LeadStatus, Tier
from apps.tenants.models import Tenant
from leadflow import handoff
from leadflow.metrics import quarantined_count

log = logging.getLogger(__name__)

REASON_MAX_CHARS = 2000
# A lead in one of these is done, or already quarantined: a late failure does not undo it.
_TERMINAL = (LeadStatus.SYNCED, LeadStatus.DUPLICATE, LeadStatus.FAILED)
_TEXT_FIELDS = {
    field.name: field.max_length
    for field in Lead._meta.concrete_fields
    if field.name in ("email", "name", "phone", "company", "source", "campaign_id", "region")
}


@dataclass(frozen=True, slots=True)
class EntryFailure:
    """An inbox entry pool A could not take, and why."""

    entry: dict
    reason: str  # for the operator: what was wrong, naming the field where known
    code: str  # for the metric: a short code, e.g. "nul_character" or the error's type


def leads_quarantine(
    trace_ids: list[str], stage: str, reason: str, code: str, error: BaseException | None = None
) -> int:
    """Pools B and C: mark these stored leads failed at `stage` (those not done already), and
    log each with its trace id, the stage and the reason (the first line with `error`'s
    traceback).

    Returns how many were quarantined.
    """
    now = timezone.now()
    with transaction.atomic():
        leads = list(
            Lead.objects.select_for_update()
            .filter(trace_id__in=trace_ids)
            .exclude(status__in=_TERMINAL)
            .order_by("trace_id")
            .values_list("trace_id", "tenant_id")
        )
        Lead.objects.filter(trace_id__in=[trace_id for trace_id, _ in leads]).update(
            status=LeadStatus.FAILED,
            failed_stage=stage,
            failed_reason=reason[:REASON_MAX_CHARS],
            failed_at=now,
            updated_at=now,
        )
        tenants = Counter(tenant_id for _, tenant_id in leads)
        transaction.on_commit(lambda: _count(tenants, stage, code))
    for index, (trace_id, tenant_id) in enumerate(leads):
        _failed_log(str(trace_id), tenant_id, stage, reason, error if index == 0 else None)
    return len(leads)


def _failed_log(trace_id: str, tenant_id, stage: str, reason: str, error=None) -> None:
    """One line per quarantined lead: which lead, which stage, why."""
    log.error(
        "lead %s quarantined at %s: %s",
        trace_id,
        stage,
        reason[:300],
        extra={"trace_id": trace_id, "tenant": tenant_id, "stage": stage, "reason": reason[:300]},
        exc_info=error,
    )


def entries_quarantine(failures: list[EntryFailure]) -> int:
    """Pool A: store each failed entry as a `failed` lead, inside the caller's transaction.

    An entry of a tenant that no longer exists is dropped (deleting a tenant deletes its
    leads), as is one with no usable trace id or tenant (nothing admission writes).
    """
    if not failures:
        return 0
    tenant_ids = {_tenant_id(failure.entry) for failure in failures} - {None}
    existing = set(Tenant.objects.filter(id__in=tenant_ids).values_list("id", flat=True))
    now = timezone.now()
    rows, tenants = [], Counter()
    for failure in failures:
        row = _failed_row(failure, now)
        if row is None or row.tenant_id not in existing:
            trace_id = failure.entry.get("trace_id") if isinstance(failure.entry, dict) else None
            log.error(
                "dropping an inbox entry pool A cannot read: %s",
                failure.reason[:300],
                extra={
                    **({"trace_id": str(trace_id)} if trace_id is not None else {}),
                    "stage": LeadStage.QUALIFICATION,
                    "reason": failure.reason[:300],
                },
            )
            continue
        rows.append(row)
        tenants[(row.tenant_id, failure.code)] += 1
    _failed_rows_store(rows)
    transaction.on_commit(
        lambda: [
            quarantined_count(tenant_id, LeadStage.QUALIFICATION, code, n)
            for (tenant_id, code), n in tenants.items()
        ]
    )
    for row in rows:
        _failed_log(str(row.trace_id), row.tenant_id, LeadStage.QUALIFICATION, row.failed_reason)
    return len(rows)


def _failed_rows_store(rows: list[Lead]) -> None:
    """Insert the failed rows (a redelivered batch finds them stored: they stay as they are).

    What a field holds is what could be stored of it; should PostgreSQL still refuse a row (a
    rule of its own pool A does not know), the row is stored with its text fields empty — the
    entry keeps them. A row refused even then is not the lead's doing: the batch fails.
    """
    try:
        with transaction.atomic():
            Lead.objects.bulk_create(rows, ignore_conflicts=True)
        return
    except (DataError, IntegrityError):
        pass
    for row in rows:
        try:
            with transaction.atomic():
                Lead.objects.bulk_create([row], ignore_conflicts=True)
        except (DataError, IntegrityError):
            for name in _TEXT_FIELDS:
                setattr(row, name, "")
            with transaction.atomic():
                Lead.objects.bulk_create([row], ignore_conflicts=True)


def failed_leads_replay(trace_ids: list[str]) -> int:
    """Send failed leads through their failed stage again (after a fix); returns how many.

    A replayed lead that fails again is quarantined again, with the new reason.
    """
    # An anonymized lead (apps/retention) has nothing left to replay.
    failed = Lead.objects.filter(
        trace_id__in=trace_ids, status=LeadStatus.FAILED, anonymized_at__isnull=True
    )
    count = 0
    # Qualification: the entry goes back to pool A, which replaces the failed row by the lead.
    by_tier: dict[str, list[str]] = {}
    for tier, raw in failed.filter(failed_stage=LeadStage.QUALIFICATION).values_list(
        "tier", "failed_entry"
    ):
        entry = json.loads(raw)
        entry["replay"] = True
        by_tier.setdefault(tier, []).append(json.dumps(entry, ensure_ascii=True))
    for tier, entries in by_tier.items():
        handoff.send_to_qualify(entries, tier)
        count += len(entries)
    # Enrichment and CRM: the lead goes back to where it waited; if the message is lost, the
    # stalled-lead sweeper sends it on.
    with transaction.atomic():
        enrich = _reopen(failed.filter(failed_stage=LeadStage.ENRICHMENT), LeadStatus.QUALIFIED)
        sync = _reopen(
            failed.filter(failed_stage=LeadStage.CRM),
            Case(
                When(enriched_at__isnull=False, then=Value(LeadStatus.ENRICHED)),
                default=Value(LeadStatus.QUALIFIED),
            ),
        )
    for tier, ids in enrich.items():
        handoff.send_to_enrich(ids, tier)
        count += len(ids)
    for tier, ids in sync.items():
        handoff.send_to_sync(ids, tier)
        count += len(ids)
    return count


def _reopen(leads, status) -> dict[str, list[str]]:
    """Put failed leads back in the status they waited in; {tier: trace ids}."""
    rows = list(leads.select_for_update().order_by("trace_id").values_list("trace_id", "tier"))
    Lead.objects.filter(
        trace_id__in=[trace_id for trace_id, _ in rows], status=LeadStatus.FAILED
    ).update(
        status=status, failed_stage="", failed_reason="", failed_at=None, updated_at=timezone.now()
    )
    by_tier: dict[str, list[str]] = {}
    for trace_id, tier in rows:
        by_tier.setdefault(tier, []).append(str(trace_id))
    return by_tier


def _count(tenants: Counter, stage: str, code: str) -> None:
    for tenant_id, n in tenants.items():
        quarantined_count(tenant_id, stage, code, n)


def _tenant_id(entry: dict) -> int | None:
    try:
        return int(entry["tenant_id"])
    except (KeyError, TypeError, ValueError):
        return None


def _failed_row(failure: EntryFailure, now: datetime) -> Lead | None:
    entry = failure.entry
    tenant_id = _tenant_id(entry)
    try:
        trace_id = uuid.UUID(str(entry["trace_id"]))
    except (KeyError, ValueError):
        return None
    if tenant_id is None:
        return None
    tier = entry.get("tier")
    try:
        received_at = datetime.fromtimestamp(float(entry["received_at"]), tz=UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        received_at = now
    return Lead(
        trace_id=trace_id,
        tenant_id=tenant_id,
        tier=tier if tier in Tier.values else Tier.NORMAL,
        status=LeadStatus.FAILED,
        demoted=bool(entry.get("demoted")),
        payload={},
        received_at=received_at,
        failed_stage=LeadStage.QUALIFICATION,
        failed_reason=failure.reason[:REASON_MAX_CHARS],
        failed_at=now,
        # ASCII: a NUL or a lone surrogate is written as its \u escape, which any column holds.
        failed_entry=json.dumps(entry, ensure_ascii=True, default=str),
        **{name: _storable(entry.get(name), size) for name, size in _TEXT_FIELDS.items()},
    )


def _storable(value, max_length: int) -> str:
    """What a text column can hold of a value: NUL and lone surrogates replaced, cut to size."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return text[:max_length]
