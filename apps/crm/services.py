"""Pool C's writes: deliver ready leads to their tenant's CRM, dead-letter the ones that gave up,
and replay dead letters. Every function is idempotent by trace_id (delivery is at-least-once).

A batch holds several tenants' leads; each tenant's group is delivered on its own, and its
failures stay its own:
- CrmUnavailable (5xx, 408, 429, timeout, breaker open): the group is retried after a backoff
  (the task re-enqueues it), LEADFLOW_CRM_MAX_RETRIES times, then dead-lettered;
- CrmRejected: dead-lettered at once; a 400/413/422 may be about one lead, so the group is split
  in halves to let the others through (at most LEADFLOW_CRM_REFUSAL_SPLIT_CALLS more calls);
- any other error (a bug, data the code cannot send or PostgreSQL cannot record): halved the
  same way, and the lead that fails alone is quarantined (apps/leads/quarantine.py);
- PostgreSQL or Redis down: raised, the task retries the batch; no lead is dead-lettered or
  quarantined for it, and leads the CRM already accepted are recorded, not sent again.
A remote group is leased before it is delivered (apps/crm/leases.py), so two runs holding the
same leads (a redelivered message, the sweeper, a replay) never both send them.
"""

import functools
import json
import logging
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.control.ledger import leads_defer, leads_deferral_close
from apps.control.models import DeferredKind, DeferredReason
from apps.control.state import shedding_current
from apps.crm.adapters import CrmAdapter, CrmRejected, CrmUnavailable, adapter_for, delivery_id
from apps.crm.dead_letters import ERROR_MAX_CHARS, leads_dead_letter
from apps.crm.leases import (
    Lease,
    deliveries_mark_sent,
    deliveries_sent_replies,
    delivery_lease_keep,
    delivery_lease_release,
    delivery_lease_seconds,
    delivery_lease_take,
)
from apps.crm.models import CrmSync, DeadLetter
from apps.crm.pace import crm_pace_wait
from apps.crm.selectors import CRM_READY
from apps.leads.models import Lead, LeadStage, LeadStatus
from apps.leads.quarantine import leads_quarantine
from apps.tenants.models import Tenant
from leadflow.logs import leads_named, log_context
from leadflow.outbound import DEPENDENCY_DOWN_ERRORS, Deadline, text_storable

log = logging.getLogger(__name__)

# Time kept for recording a delivery after its call, when deciding whether a call still fits.
RECORD_RESERVE_SECONDS = 2.0
_LEADS = connection.ops.quote_name(Lead._meta.db_table)


@dataclass(frozen=True)
class Retry:
    trace_ids: list[str]
    error: str


@dataclass
class SyncOutcome:
    """What a run leaves to later runs (the task enqueues them)."""

    # Groups that met a transient failure: each is tried again after the backoff of attempt+1.
    retry: list[Retry] = field(default_factory=list)
    # Leads not tried before the run's deadline: sent again at once, at the same attempt.
    later: list[str] = field(default_factory=list)
    # Groups to try again after a wait (seconds): their CRM's pace, or another run's lease.
    waiting: list[tuple[list[str], float]] = field(default_factory=list)


def sync_outcome_defer_if_paused(outcome: SyncOutcome, tier: str) -> bool:
    """A paused tier's queue receives nothing: what a run leaves for later waits in the deferred
    ledger instead, sent when the tier resumes (its retry count starts again). True if so."""
    shedding = shedding_current()
    if tier not in shedding.paused_tiers:
        return False
    left = [t for retry in outcome.retry for t in retry.trace_ids] + outcome.later
    left += [t for trace_ids, _ in outcome.waiting for t in trace_ids]
    leads_defer(DeferredKind.CRM_SYNC, left, shedding.mode, DeferredReason.PAUSED)
    return True


def crm_retry_countdown(attempt: int) -> float:
    """Seconds before retry number `attempt` (1, 2, ...): base x 2^(attempt-1), capped, with
    +/- LEADFLOW_CRM_RETRY_JITTER around it (1, 2, 4 s +/- 20 % by default)."""
    nominal = min(
        settings.CRM_RETRY_BASE_SECONDS * 2 ** (attempt - 1),
        settings.CRM_RETRY_BACKOFF_MAX_SECONDS,
    )
    jitter = settings.CRM_RETRY_JITTER
    return nominal * random.uniform(1 - jitter, 1 + jitter)


# What pool C reads of a ready lead: its CRM payload's fields, in the payload's order.
_PAYLOAD_FIELDS = (
    "trace_id",
    "email",
    "name",
    "phone",
    "company",
    "source",
    "campaign_id",
    "region",
    "tier",
    "score",
    "is_qualified",
    "ai_degraded",
    "enrichment",
    "payload",
    "received_at",
)
_PAYLOAD_COLUMNS = _PAYLOAD_FIELDS[:12]  # then enrichment, payload, received_at


@dataclass(frozen=True, slots=True)
class ReadyLead:
    """A lead pool C delivers: its tenant and the stored values its CRM payload is made of
    (plain values read in one query, not model instances: pool C builds hundreds a batch)."""

    trace_id: uuid.UUID
    tenant_id: int
    values: tuple  # _PAYLOAD_FIELDS' values, in order


def lead_crm_payload(lead: ReadyLead) -> dict:
    """What the CRM receives for one lead."""
    payload = dict(zip(_PAYLOAD_FIELDS, lead.values, strict=True))
    payload["trace_id"] = str(lead.trace_id)
    payload["received_at"] = payload["received_at"].isoformat()
    return payload


def leads_sync(
    trace_ids: list[str],
    resend: bool = False,
    attempt: int = 0,
    deadline: Deadline | None = None,
    outcome: SyncOutcome | None = None,
) -> SyncOutcome:
    """Deliver the CRM-ready, not yet synced leads among trace_ids, a tenant at a time.

    With resend, synced leads are delivered again too (a backfilled enrichment). `attempt` is
    how many times these leads met a transient failure before. Work that does not fit before
    the deadline is left in the outcome (pass `outcome` to keep it if this raises).
    """
    deadline = deadline or Deadline(settings.CRM_TASK_DEADLINE_SECONDS)
    outcome = outcome if outcome is not None else SyncOutcome()
    ready = _ready(resend)
    by_tenant: dict[int, list[str]] = defaultdict(list)
    for tenant_id, trace_id in _ready_ids(ready, trace_ids):
        by_tenant[tenant_id].append(str(trace_id))
    tenants = Tenant.objects.in_bulk(list(by_tenant)) if by_tenant else {}
    for tenant_id, tenant_ids in by_tenant.items():
        tenant = tenants.get(tenant_id)
        if tenant is None:
            continue  # deleted meanwhile, and its leads with it
        with log_context(tenant=tenant_id):
            _tenant_sync(tenant, tenant_ids, ready, attempt, deadline, outcome)
    return outcome


def _ready_ids(ready: Q, trace_ids: list[str]) -> list[tuple[int, uuid.UUID]]:
    """The ready leads among trace_ids, oldest first, as (tenant_id, trace_id): one statement,
    a primary-key probe per id (apps/leads/services.py says why), the ids as one array literal
    (the ORM's IN binds and quotes 500 parameters one by one). What a lead's CRM receives is
    read only for a remote CRM (_ready_read): the local adapter needs none of it."""
    where, params = _where_sql(ready)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT lead.tenant_id, lead.trace_id"
            f" FROM unnest(%s::uuid[]) AS batch (trace_id) CROSS JOIN LATERAL ("
            f"  SELECT tenant_id, trace_id, received_at FROM {_LEADS}"
            f"  WHERE trace_id = batch.trace_id AND {where} LIMIT 1"
            f" ) AS lead ORDER BY lead.received_at",
            [_array_literal(trace_ids), *params],
        )
        return cursor.fetchall()


def _ready_read(ready: Q, trace_ids: list[str]) -> list[ReadyLead]:
    """The ready leads among trace_ids, oldest first, with their CRM payload's values (one
    statement, as _ready_ids)."""
    where, params = _where_sql(ready)
    # The enrichment's table through the relation: pool C does not import pool B's code.
    enrichment = Lead._meta.get_field("enrichment").related_model
    enrichments = connection.ops.quote_name(enrichment._meta.db_table)
    columns = ", ".join(f"lead.{name}" for name in _PAYLOAD_COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT lead.tenant_id, {columns}, enrichment.data, lead.payload, lead.received_at"
            f" FROM unnest(%s::uuid[]) AS batch (trace_id) CROSS JOIN LATERAL ("
            f"  SELECT * FROM {_LEADS} WHERE trace_id = batch.trace_id AND {where} LIMIT 1"
            f" ) AS lead LEFT JOIN {enrichments} AS enrichment"
            f" ON enrichment.lead_id = lead.trace_id ORDER BY lead.received_at",
            [_array_literal(trace_ids), *params],
        )
        rows = cursor.fetchall()
    # jsonb comes as text from Django's connection (its JSONField decodes it): decoded here.
    return [
        ReadyLead(row[1], row[0], (*row[1:-3], _json_load(row[-3]), _json_load(row[-2]), row[-1]))
        for row in rows
    ]


def _json_load(text):
    return json.loads(text) if isinstance(text, str | bytes) else text


def _array_literal(trace_ids) -> str:
    """A PostgreSQL array literal of trace ids, each once (nothing to quote in a UUID)."""
    ids: dict[str, None] = {}
    for trace_id in trace_ids:
        try:
            ids.setdefault(str(uuid.UUID(str(trace_id))), None)
        except ValueError:
            log.warning("pool C got a trace id that is not a UUID: %r", trace_id)
    return "{" + ",".join(ids) + "}"


@functools.cache
def _where_sql(condition: Q) -> tuple[str, tuple]:
    """A condition on leads as SQL (columns named by table), compiled from the Q object so that
    the raw statements and the ORM's filters cannot drift apart."""
    query = Lead.objects.filter(condition).query
    where, params = query.where.as_sql(query.get_compiler(connection=connection), connection)
    return where, tuple(params)


def _ready(resend: bool) -> Q:
    return CRM_READY | Q(status=LeadStatus.SYNCED) if resend else CRM_READY


def _tenant_sync(
    tenant: Tenant,
    trace_ids: list[str],
    ready: Q,
    attempt: int,
    deadline: Deadline,
    outcome: SyncOutcome,
) -> None:
    adapter = adapter_for(tenant)
    if not deadline.allows(adapter.timeout_seconds + RECORD_RESERVE_SECONDS):
        outcome.later += trace_ids
        return
    if not adapter.remote:
        # The local adapter's CRM is the CrmSync rows: nothing to build, send or send twice.
        _record_isolated(trace_ids, adapter.name, adapter.deliver(tenant, trace_ids))
        return
    lease = delivery_lease_take(tenant.id, trace_ids, uuid.uuid4().hex)
    delivery = _Delivery(tenant, adapter, lease, attempt, deadline, outcome)
    if lease.held:
        log.info(
            "%d leads are being delivered by another run: looked at later",
            len(lease.held),
            extra={**leads_named(lease.held), "stage": "crm"},
        )
        outcome.waiting.append((list(lease.held), max(lease.held.values())))
    try:
        delivery.recorded += _sent_record(tenant, lease, adapter.name)
        # Read under the lease, so only the still unsynced: a run that held these leads a
        # moment ago may have synced them.
        leads = _ready_read(ready, lease.to_deliver) if lease.to_deliver else []
        if not leads:
            return
        reserve = adapter.timeout_seconds + RECORD_RESERVE_SECONDS
        wait = crm_pace_wait(tenant.id, len(leads), deadline, reserve) if adapter.paced else 0
        if wait:
            outcome.waiting.append(([str(lead.trace_id) for lead in leads], wait))
            return
        delivery.run(leads)
    finally:
        delivery_lease_release(lease, delivery.recorded)


def _sent_record(tenant: Tenant, lease: Lease, adapter_name: str) -> list[str]:
    """Record leads an earlier run got to the CRM but could not record: never sent twice."""
    if not lease.sent:
        return []
    replies = deliveries_sent_replies(tenant.id, set(lease.sent.values()))
    by_delivery: dict[str, list[str]] = defaultdict(list)
    for trace_id, delivery in lease.sent.items():
        by_delivery[delivery].append(trace_id)
    recorded = []
    for delivery, trace_ids in by_delivery.items():
        recorded += _record_isolated(trace_ids, adapter_name, replies[delivery])
    log.info(
        "recorded %d leads delivered by an earlier run",
        len(lease.sent),
        extra={**leads_named(lease.sent), "stage": "crm"},
    )
    return recorded


class _Delivery:
    """One tenant's group through its remote CRM, under its lease (kept before each call),
    halved where a part fails for its leads' sake."""

    def __init__(
        self, tenant, adapter: CrmAdapter, lease: Lease, attempt: int, deadline: Deadline, outcome
    ):
        self.tenant = tenant
        self.adapter = adapter
        self.lease = lease
        self.attempt = attempt
        self.deadline = deadline
        self.outcome = outcome
        self.splits_left = settings.CRM_REFUSAL_SPLIT_CALLS
        self.recorded: list[str] = []

    def run(self, leads: list[ReadyLead]) -> None:
        if not leads:
            return
        ids = [str(lead.trace_id) for lead in leads]
        if not self.deadline.allows(self.adapter.timeout_seconds + RECORD_RESERVE_SECONDS):
            self.outcome.later += ids
            return
        leads, ids = self._still_leased(leads, ids)
        if not leads:
            return
        try:
            payloads = [lead_crm_payload(lead) for lead in leads]
            response = self.adapter.deliver(self.tenant, payloads)
        except CrmUnavailable as exc:
            self._unavailable(ids, exc)
            return
        except CrmRejected as exc:
            if exc.may_be_about_leads and self._split(leads):
                return
            _dead_letter(ids, exc, self.attempt + 1)
            return
        except DEPENDENCY_DOWN_ERRORS:
            raise
        except Exception as exc:  # a bug, or a lead the code cannot send: find which
            if self._split(leads):
                return
            _quarantine(ids, "not sent to the CRM", exc)
            return
        # The CRM has them now: never send them again.
        deliveries_mark_sent(self.tenant.id, ids, delivery_id(payloads), response)
        self.recorded += _record_isolated(ids, self.adapter.name, response)

    def _still_leased(
        self, leads: list[ReadyLead], ids: list[str]
    ) -> tuple[list[ReadyLead], list[str]]:
        kept = set(delivery_lease_keep(self.lease, ids))
        lapsed = [trace_id for trace_id in ids if trace_id not in kept]
        if lapsed:
            # This run stalled past its lease: another may be delivering them now. Looked at
            # again once such a lease would have ended (synced by then: nothing to do).
            log.warning(
                "%d leads' delivery leases lapsed: left to another run",
                len(lapsed),
                extra={**leads_named(lapsed), "stage": "crm"},
            )
            self.outcome.waiting.append((lapsed, delivery_lease_seconds()))
        return [lead for lead in leads if str(lead.trace_id) in kept], [i for i in ids if i in kept]

    def _split(self, leads: list[ReadyLead]) -> bool:
        if len(leads) < 2 or self.splits_left < 2:
            return False
        self.splits_left -= 2
        half = len(leads) // 2
        self.run(leads[:half])
        self.run(leads[half:])
        return True

    def _unavailable(self, ids: list[str], exc: CrmUnavailable) -> None:
        if self.attempt < settings.CRM_MAX_RETRIES:
            log.info(
                "CRM unavailable (attempt %d), retrying %d leads: %s",
                self.attempt + 1,
                len(ids),
                exc,
                extra={
                    **leads_named(ids),
                    "stage": "crm",
                    "reason": f"{type(exc).__name__}: {exc}",
                },
            )
            self.outcome.retry.append(Retry(ids, f"{type(exc).__name__}: {exc}"))
        else:
            _dead_letter(ids, exc, self.attempt + 1)


def _record_isolated(trace_ids: list[str], adapter_name: str, response: dict) -> list[str]:
    """Record the delivered leads; one PostgreSQL refuses is quarantined, the rest recorded."""
    try:
        _record_delivered(trace_ids, adapter_name, response)
        return trace_ids
    except DEPENDENCY_DOWN_ERRORS:
        raise
    except Exception as exc:
        if len(trace_ids) == 1:
            _quarantine(trace_ids, "delivered to the CRM but not recorded", exc)
            return trace_ids  # its sent mark can go: the lead is out of the pipeline
    half = len(trace_ids) // 2
    return _record_isolated(trace_ids[:half], adapter_name, response) + _record_isolated(
        trace_ids[half:], adapter_name, response
    )


@transaction.atomic
def _record_delivered(trace_ids: list, adapter_name: str, response: dict) -> None:
    """One statement records the delivery: locks the leads (in key order), writes their CrmSync
    rows and marks the CRM-ready ones synced. It answers which of them were dead-lettered or
    waiting in the deferred ledger (read under the lock, as they are now); only those have a
    dead letter or a ledger row to close, so a batch with none runs nothing more."""
    now = timezone.now()
    ids = _array_literal(sorted(map(str, trace_ids)))  # locked in key order
    statement, ready_params = _record_statement()
    with connection.cursor() as cursor:
        cursor.execute(
            statement,
            [
                ids,
                *ready_params,
                # A concurrent delivery of the same leads may have recorded first: keep its row.
                adapter_name,
                json.dumps(response),
                now,
                ids,
                LeadStatus.SYNCED.value,
                now,
                now,
                LeadStatus.SYNCED.value,
                LeadStatus.DEAD_LETTERED.value,
            ],
        )
        flagged = cursor.fetchall()
    dead_lettered = [
        trace_id for trace_id, status, _ in flagged if status == LeadStatus.DEAD_LETTERED
    ]
    if dead_lettered:
        DeadLetter.objects.filter(lead_id__in=dead_lettered, replayed_at__isnull=True).update(
            replayed_at=now
        )
    deferred = [trace_id for trace_id, _, sync_deferred in flagged if sync_deferred]
    if deferred:
        leads_deferral_close(DeferredKind.CRM_SYNC, deferred)


@functools.cache
def _record_statement() -> tuple[str, tuple]:
    """_record_delivered's statement, and the parameters of its CRM_READY condition (compiled
    from the Q object, so the two cannot drift apart)."""
    syncs = connection.ops.quote_name(CrmSync._meta.db_table)
    where, params = _where_sql(CRM_READY | Q(status=LeadStatus.SYNCED))
    # The leads are read one primary-key probe each (apps/leads/services.py says why); a synced
    # lead (a second delivery) is locked and read for its ledger flag, and keeps its synced_at.
    statement = f"""
WITH locked AS (
    SELECT lead.trace_id, lead.status, lead.sync_deferred
    FROM unnest(%s::uuid[]) AS batch (trace_id) CROSS JOIN LATERAL (
        SELECT trace_id, status, sync_deferred FROM {_LEADS}
        WHERE trace_id = batch.trace_id AND {where} LIMIT 1 FOR UPDATE
    ) AS lead
), recorded AS (
    INSERT INTO {syncs} (lead_id, adapter, response, synced_at)
    SELECT trace_id, %s, %s::jsonb, %s FROM unnest(%s::uuid[]) AS batch (trace_id)
    ON CONFLICT (lead_id) DO NOTHING
), synced AS (
    UPDATE {_LEADS} AS lead SET status = %s, synced_at = %s, updated_at = %s
    FROM locked WHERE lead.trace_id = locked.trace_id AND locked.status <> %s
)
SELECT trace_id, status, sync_deferred FROM locked WHERE status = %s OR sync_deferred
"""
    return statement, tuple(params)


def _dead_letter(trace_ids: list[str], exc: Exception, attempts: int) -> None:
    reason = f"{type(exc).__name__}: {exc}"
    log.warning(
        "CRM gave up on %d leads after %d attempts, dead-lettered: %s",
        len(trace_ids),
        attempts,
        reason[:300],
        extra={**leads_named(trace_ids), "stage": "crm", "reason": reason[:300]},
    )
    leads_dead_letter(trace_ids, "crm", reason, attempts)


def _quarantine(trace_ids: list[str], what: str, exc: Exception) -> None:
    reason = text_storable(f"{what}: {type(exc).__name__}: {exc}", ERROR_MAX_CHARS)
    leads_quarantine(trace_ids, LeadStage.CRM, reason, type(exc).__name__[:40], exc)
