"""Pool A's write: normalize, dedup semantically, score, and store a batch of leads in bulk.

A batch reaches PostgreSQL as one COPY per tenant (psycopg's Copy.write_row, which formats
and escapes each value): the ORM's bulk_create spent most of a batch adapting values one at a
time (README, "Pool A's write path"). What does not depend on other leads (normalizing, scoring,
most of each row's values) is done before the tenant's advisory lock is taken; under the lock
one round trip reads what dedup needs and the batch's rows already stored, then the new rows are
copied. A lead that fails for a reason of its own is quarantined (apps/leads/quarantine.py).
"""

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from django.db import connection, transaction
from django.utils import timezone

from apps.leads.models import Lead, LeadStage, LeadStatus
from apps.leads.quarantine import REASON_MAX_CHARS, EntryFailure, entries_quarantine
from apps.leads.rows import (
    COPY_TYPES,
    DUPLICATE,
    STATUS_COLUMN,
    PreparedLead,
    Refused,
    copy_statement,
    duplicate_decided,
    lead_prepare,
)
from apps.leads.scoring import Verdict, scoring_current
from apps.tenants.models import Tenant
from leadflow.logs import leads_named

log = logging.getLogger(__name__)

SEMANTIC_DEDUP_WINDOW = timedelta(hours=24)
# Namespace of the advisory lock that serializes one tenant's semantic dedup across pool A.
_DEDUP_LOCK_NAMESPACE = 0x1EAD


@dataclass
class QualifyOutcome:
    """Where each lead of the batch goes next."""

    to_enrich: list[str] = field(default_factory=list)  # qualified: pool B, then C
    to_sync: list[str] = field(default_factory=list)  # under the threshold: straight to C


def leads_qualify(entries: list[dict]) -> QualifyOutcome:
    """Store the batch idempotently (by trace id) and say where each lead goes next.

    A redelivered batch inserts nothing new; the outcome of a lead already stored is read from
    its stored row, so the next stages get the leads that still need them. A lead that cannot
    be read or stored for a reason of its own is quarantined (stored `failed`, with the reason)
    and its batch-mates go on; an error that is not a lead's (the database is down) fails the
    whole batch, to be retried.
    """
    # Long on purpose: a batch's whole way through one transaction (prepare, lock, copy,
    # quarantine, route), so what is inside the transaction and what is not shows in one place.
    scoring = scoring_current()
    now_text = timezone.now().isoformat()
    received: dict[float, tuple[datetime, str]] = {}  # a request's leads share a timestamp
    decided: dict[Verdict, tuple] = {}  # a batch holds a few distinct verdicts
    by_tenant: dict[int, list[PreparedLead]] = {}
    failures: list[EntryFailure] = []
    for entry in entries:
        try:
            lead = lead_prepare(entry, scoring, now_text, received, decided)
        except Refused as refused:
            failures.append(EntryFailure(entry, refused.reason, refused.code))
            continue
        except Exception as error:  # noqa: BLE001 - any lead pool A cannot read fails alone
            failures.append(EntryFailure(entry, _error_text(error), type(error).__name__))
            continue
        by_tenant.setdefault(lead.tenant_id, []).append(lead)
    tail = ("f", "f", "f", None, None, now_text, "", "", None, "", None)  # BATCH_COLUMNS

    outcome = QualifyOutcome()
    done: set[str] = set()  # a trace id twice in a batch is stored, and sent on, once
    with transaction.atomic(), connection.wrap_database_errors:
        conn = connection.connection
        # Sorted: two processes holding batches of the same tenants lock them in one order.
        for tenant_id, leads in sorted(by_tenant.items()):
            replays = [lead.trace_id for lead in leads if lead.replay]
            tenant_exists, stored, seen = _tenant_lock_and_read(conn, tenant_id, leads, replays)
            if not tenant_exists:
                # Deleted while its leads waited (deleting a tenant deletes its leads). Stored,
                # they would fail the whole batch, and a batch holds other tenants' leads too.
                log.warning(
                    "dropping %d leads of tenant %s, which no longer exists",
                    len(leads),
                    tenant_id,
                    extra={
                        **leads_named(lead.trace_id for lead in leads),
                        "stage": LeadStage.QUALIFICATION,
                        "reason": "tenant deleted",
                    },
                )
                continue
            rows: list[tuple[PreparedLead, tuple]] = []
            for lead in leads:
                if lead.trace_id in done:
                    continue
                done.add(lead.trace_id)
                earlier = seen.get(lead.email)
                duplicate = earlier is not None and (
                    earlier[1] >= lead.received_at - SEMANTIC_DEDUP_WINDOW
                )
                if not duplicate:
                    seen[lead.email] = (lead.trace_id, lead.received_at)
                if lead.trace_id in stored:  # redelivered: its stored row says where it goes
                    status, qualified = stored[lead.trace_id]
                    if status == LeadStatus.QUALIFIED:
                        (outcome.to_enrich if qualified else outcome.to_sync).append(lead.trace_id)
                elif duplicate:  # the DECIDED_COLUMNS of a duplicate: no score, its original
                    rows.append((lead, (*lead.values, *duplicate_decided(earlier[0]), *tail)))
                else:
                    rows.append((lead, (*lead.values, *lead.decided, *tail)))
            refused = _rows_copy(conn, rows)
            failures += (EntryFailure(lead.entry, reason, code) for lead, reason, code in refused)
            refused_ids = {lead.trace_id for lead, _, _ in refused}
            for lead, row in rows:
                if row[STATUS_COLUMN] != DUPLICATE and lead.trace_id not in refused_ids:
                    (outcome.to_enrich if lead.qualified else outcome.to_sync).append(lead.trace_id)
        entries_quarantine(failures)
    return outcome


# Errors of PostgreSQL (or psycopg's adaptation) that a row's own data causes: invalid text or
# JSON, a value too long, a constraint. A connection error, a deadlock or a timeout is not one.
_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded)
_COPY_LINE = re.compile(r"\bCOPY \S+, line (\d+)")


def _rows_copy(conn: psycopg.Connection, rows: list) -> list[tuple["PreparedLead", str, str]]:
    """COPY the (lead, row) pairs; returns the leads PostgreSQL refused, each with its reason.

    Each attempt runs in a savepoint. A refused row is found from the error's line number when
    PostgreSQL gives one (one more COPY for the rest), else by halving the rows: one poison lead
    in 500 costs a few extra statements, never a statement per lead.
    """
    if not rows:
        return []
    try:
        with (
            transaction.atomic(),  # a savepoint inside the batch's transaction
            psycopg.Cursor(conn) as cursor,
            cursor.copy(copy_statement()) as copy,
        ):
            # Every value is text already (COPY's text format parses it by column): psycopg's
            # text dumper only escapes it, where its UUID, datetime or bool dumpers cost ~40
            # times as much a row.
            copy.set_types(COPY_TYPES)
            for _, row in rows:
                copy.write_row(row)
        return []
    except _ROW_ERRORS as error:
        if len(rows) == 1:
            lead = rows[0][0]
            return [(lead, _error_text(error), type(error).__name__)]
        line = _copy_error_line(error)
        if line is not None and 1 <= line <= len(rows):
            lead = rows[line - 1][0]
            rest = rows[: line - 1] + rows[line:]
            return [(lead, _error_text(error), type(error).__name__), *_rows_copy(conn, rest)]
        half = len(rows) // 2
        return _rows_copy(conn, rows[:half]) + _rows_copy(conn, rows[half:])


def _copy_error_line(error: Exception) -> int | None:
    match = _COPY_LINE.search(getattr(getattr(error, "diag", None), "context", None) or "")
    return int(match.group(1)) if match else None


def _error_text(error: Exception) -> str:
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0] if message else ''}"[:REASON_MAX_CHARS]


def _tenant_lock_and_read(
    conn: psycopg.Connection, tenant_id: int, leads: list[PreparedLead], replays: list[str]
) -> tuple[bool, dict[str, tuple[str, bool | None]], dict[str, tuple[str, datetime]]]:
    """Take the tenant's dedup lock, delete the failed rows of leads an operator replays, then
    read, in the same round trip: whether the tenant
    still exists; the batch's leads already stored, {trace id: (status, is_qualified)}; and the
    first non-duplicate lead of each of the batch's emails in the dedup window, outside the
    batch, {email: (trace id, received_at)}.

    Two pool A processes holding the same tenant's batches must not both decide that the same
    email is new: they take turns per tenant, until the transaction ends. The reads are
    statements after the lock's (one simple query, run in order), so each takes its snapshot
    once the lock is held and sees what the previous holder committed. Only this function
    writes leads, always under the lock of the lead's tenant, and a trace id is one lead's: the
    rows found stored here are all those the COPY could collide with. A quarantined lead is
    nobody's original: dedup looks past it.
    """
    # Long on purpose: one round trip under the tenant's lock, its SQL and the reading of its
    # answers side by side, so the statement and its parameters cannot drift apart.
    trace_ids = [lead.trace_id for lead in leads]
    emails = {lead.email for lead in leads}
    since = min(lead.received_at for lead in leads) - SEMANTIC_DEDUP_WINDOW
    table = connection.ops.quote_name(Lead._meta.db_table)
    tenants_table = connection.ops.quote_name(Tenant._meta.db_table)
    # Client-side binding, so the three statements go as one; the arrays are passed as one
    # literal each (psycopg would adapt their elements one by one).
    with psycopg.ClientCursor(conn) as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%(namespace)s, %(tenant)s);"
            + (
                f" DELETE FROM {table} WHERE trace_id = ANY(%(replays)s::uuid[])"
                " AND status = %(failed)s AND failed_stage = %(qualification)s;"
                if replays
                else ""
            )
            + f" SELECT EXISTS (SELECT 1 FROM {tenants_table} WHERE id = %(tenant)s);"
            # One primary-key probe per trace id, whatever the planner knows: a plain
            # `trace_id = ANY(...)` on a table that grew since it was last analyzed can be
            # planned as a scan of the whole table (make bench saw writes fall 30-fold). The
            # LIMIT keeps the subquery a subquery: without it the planner flattens it into a
            # join, and a stale estimate makes that a hash join over a scan of the table.
            " SELECT stored.trace_id, stored.status, stored.is_qualified"
            " FROM unnest(%(trace_ids)s::uuid[]) AS batch (trace_id)"
            " CROSS JOIN LATERAL ("
            f"  SELECT trace_id, status, is_qualified FROM {table}"
            "   WHERE trace_id = batch.trace_id LIMIT 1"
            " ) AS stored;"
            # One index probe per email, earliest first, for the same reason: a plain
            # `email = ANY(...)` on a table that grew since it was last analyzed is planned as
            # a scan of the tenant's whole window.
            " SELECT batch.email, earlier.trace_id, earlier.received_at"
            " FROM unnest(%(emails)s::text[]) AS batch (email)"
            " CROSS JOIN LATERAL ("
            f"  SELECT trace_id, received_at FROM {table}"
            "   WHERE tenant_id = %(tenant)s AND email = batch.email"
            "   AND received_at >= %(since)s AND status <> ALL(%(not_originals)s::text[])"
            "   AND trace_id <> ALL(%(trace_ids)s::uuid[])"
            "   ORDER BY received_at LIMIT 1"
            " ) AS earlier",
            {
                "namespace": _DEDUP_LOCK_NAMESPACE,
                "tenant": tenant_id,
                "trace_ids": _array_literal(trace_ids),
                "emails": _array_literal(emails),
                "since": since,
                "not_originals": _array_literal([DUPLICATE, LeadStatus.FAILED.value]),
                "replays": _array_literal(replays),
                "failed": LeadStatus.FAILED.value,
                "qualification": LeadStage.QUALIFICATION.value,
            },
        )
        cursor.nextset()
        if replays:
            cursor.nextset()
        [(tenant_exists,)] = cursor.fetchall()
        cursor.nextset()
        stored = {str(trace_id): (status, qualified) for trace_id, status, qualified in cursor}
        cursor.nextset()
        first = {email: (str(trace_id), received_at) for email, trace_id, received_at in cursor}
    return tenant_exists, stored, first


def _array_literal(values) -> str:
    """A PostgreSQL array literal of strings, each quoted."""
    return (
        "{"
        + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "}"
    )
