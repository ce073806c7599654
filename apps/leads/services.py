"""Pool A's write: normalize, dedup semantically, score, and store a batch of leads in bulk.

A batch reaches PostgreSQL as one COPY per tenant (psycopg's Copy.write_row, which formats
and escapes each value): the ORM's bulk_create spent most of a batch adapting values one at a
time (README, "Pool A's write path"). What does not depend on other leads (normalizing, scoring,
most of each row's values) is done before the tenant's advisory lock is taken; under the lock
one round trip reads what dedup needs and the batch's rows already stored, then the new rows are
copied. A lead that fails for a reason of its own is quarantined (apps/leads/quarantine.py).
"""

import functools
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.utils import timezone

from apps.leads.models import Lead, LeadStage, LeadStatus, Tier
from apps.leads.normalization import email_domain, email_normalize, phone_normalize
from apps.leads.quarantine import REASON_MAX_CHARS, EntryFailure, entries_quarantine
from apps.leads.scoring import Scoring, Verdict, scoring_current
from apps.tenants.models import Tenant

log = logging.getLogger(__name__)

SEMANTIC_DEDUP_WINDOW = timedelta(hours=24)
# Namespace of the advisory lock that serializes one tenant's semantic dedup across pool A.
_DEDUP_LOCK_NAMESPACE = 0x1EAD

# The COPY's columns, in four groups: known before dedup (built before the lock), decided by
# dedup and scoring, the same for the whole batch, and the quarantine's (empty: not failed).
_LEAD_COLUMNS = (
    "trace_id",
    "tenant_id",
    "demoted",
    "tier",
    "email",
    "name",
    "phone",
    "company",
    "source",
    "campaign_id",
    "region",
    "payload",
    "received_at",
)
_DECIDED_COLUMNS = (
    "status",
    "score",
    "is_qualified",
    "score_reasons",
    "duplicate_of",
    "qualified_at",
)
_BATCH_COLUMNS = (
    "ai_degraded",
    "enrichment_deferred",
    "sync_deferred",
    "enriched_at",
    "synced_at",
    "updated_at",
    "failed_stage",
    "failed_reason",
    "failed_at",
    "failed_entry",
)
_COPY_COLUMNS = (*_LEAD_COLUMNS, *_DECIDED_COLUMNS, *_BATCH_COLUMNS)
_STATUS_COLUMN = _COPY_COLUMNS.index("status")
_COPY_TYPES = ["text"] * len(_COPY_COLUMNS)
_DUPLICATE = LeadStatus.DUPLICATE.value
_TIERS = frozenset(Tier.values)
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass
class QualifyOutcome:
    """Where each lead of the batch goes next."""

    to_enrich: list[str] = field(default_factory=list)  # qualified: pool B, then C
    to_sync: list[str] = field(default_factory=list)  # under the threshold: straight to C


@dataclass(slots=True)
class _Lead:
    trace_id: str
    tenant_id: int
    email: str
    received_at: datetime
    values: tuple  # the _LEAD_COLUMNS
    qualified: bool
    decided: tuple  # the _DECIDED_COLUMNS were the lead not a duplicate
    entry: dict  # as it came from the inbox, for the quarantine
    replay: bool  # an operator replays it: a failed row of it is replaced


def leads_qualify(entries: list[dict]) -> QualifyOutcome:
    """Store the batch idempotently (by trace id) and say where each lead goes next.

    A redelivered batch inserts nothing new; the outcome of a lead already stored is read from
    its stored row, so the next stages get the leads that still need them. A lead that cannot
    be read or stored for a reason of its own is quarantined (stored `failed`, with the reason)
    and its batch-mates go on; an error that is not a lead's (the database is down) fails the
    whole batch, to be retried.
    """
    scoring = scoring_current()
    now_text = timezone.now().isoformat()
    received: dict[float, tuple[datetime, str]] = {}  # a request's leads share a timestamp
    decided: dict[Verdict, tuple] = {}  # a batch holds a few distinct verdicts
    by_tenant: dict[int, list[_Lead]] = {}
    failures: list[EntryFailure] = []
    for entry in entries:
        try:
            lead = _lead_prepare(entry, scoring, now_text, received, decided)
        except _Refused as refused:
            failures.append(EntryFailure(entry, refused.reason, refused.code))
            continue
        except Exception as error:  # noqa: BLE001 - any lead pool A cannot read fails alone
            failures.append(EntryFailure(entry, _error_text(error), type(error).__name__))
            continue
        by_tenant.setdefault(lead.tenant_id, []).append(lead)
    tail = ("f", "f", "f", None, None, now_text, "", "", None, "")  # _BATCH_COLUMNS

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
                    "dropping %d leads of tenant %s, which no longer exists", len(leads), tenant_id
                )
                continue
            rows: list[tuple[_Lead, tuple]] = []
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
                elif duplicate:  # the _DECIDED_COLUMNS of a duplicate: no score, its original
                    rows.append((lead, (*lead.values, *_duplicate_of(earlier[0]), *tail)))
                else:
                    rows.append((lead, (*lead.values, *lead.decided, *tail)))
            refused = _rows_copy(conn, rows)
            failures += (EntryFailure(lead.entry, reason, code) for lead, reason, code in refused)
            refused_ids = {lead.trace_id for lead, _, _ in refused}
            for lead, row in rows:
                if row[_STATUS_COLUMN] != _DUPLICATE and lead.trace_id not in refused_ids:
                    (outcome.to_enrich if lead.qualified else outcome.to_sync).append(lead.trace_id)
        entries_quarantine(failures)
    return outcome


class _Refused(Exception):
    """A lead pool A can tell PostgreSQL would refuse, and why (checked before the COPY)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


# Errors of PostgreSQL (or psycopg's adaptation) that a row's own data causes: invalid text or
# JSON, a value too long, a constraint. A connection error, a deadlock or a timeout is not one.
_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded)
_COPY_LINE = re.compile(r"\bCOPY \S+, line (\d+)")


def _rows_copy(conn: psycopg.Connection, rows: list) -> list[tuple["_Lead", str, str]]:
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
            cursor.copy(_copy_statement()) as copy,
        ):
            # Every value is text already (COPY's text format parses it by column): psycopg's
            # text dumper only escapes it, where its UUID, datetime or bool dumpers cost ~40
            # times as much a row.
            copy.set_types(_COPY_TYPES)
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


def _duplicate_of(original: str) -> tuple:
    return (_DUPLICATE, None, None, "[]", original, None)


# Text columns and their sizes, checked after normalization (the intake checks what it was sent).
_TEXT_LIMITS = {
    f.column: f.max_length
    for f in Lead._meta.concrete_fields
    if f.column in ("email", "name", "phone", "company", "source", "campaign_id", "region")
}
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an escaped NUL, not an escaped backslash


def _lead_prepare(
    entry: dict,
    scoring: Scoring,
    now_text: str,
    received: dict[float, tuple[datetime, str]],
    decided_by_verdict: dict[Verdict, tuple],
) -> "_Lead":
    """Normalize and score one inbox entry, and its row's values but for dedup's part.

    Raises _Refused for what PostgreSQL would refuse (a NUL, a value over its column's size),
    so such a lead is quarantined before the COPY rather than found by it.
    """
    trace_id = entry["trace_id"]
    if not (isinstance(trace_id, str) and _CANONICAL_UUID.fullmatch(trace_id)):
        trace_id = str(uuid.UUID(str(trace_id)))
    tenant_id = int(entry["tenant_id"])
    tier = entry["tier"]
    if tier not in _TIERS:
        raise _Refused("bad_tier", f"tier {tier!r} is not one of {sorted(_TIERS)}")
    email = email_normalize(entry["email"])
    region = entry.get("region") or ""
    phone = phone_normalize(entry.get("phone") or "", region)
    name = entry.get("name") or ""
    company = entry.get("company") or ""
    source = entry.get("source") or ""
    campaign_id = entry.get("campaign_id") or ""
    texts = {
        "email": email,
        "name": name,
        "phone": phone,
        "company": company,
        "source": source,
        "campaign_id": campaign_id,
        "region": region,
    }
    # One scan of all the text for what no column can hold; the field is named only when
    # something is found.
    try:
        joined = "".join(texts.values())
        bad = "\x00" in joined or not joined.isascii() and not _utf8(joined)
    except TypeError:
        bad = True
    for column, value in texts.items():
        if bad:
            _text_check(column, value)
        if len(value) > _TEXT_LIMITS[column]:
            raise _Refused(
                "too_long",
                f"{column} is {len(value)} characters once normalized; the limit is "
                f"{_TEXT_LIMITS[column]}",
            )
    payload = _payload_json(entry.get("payload") or {})
    stamp = entry["received_at"]
    received_at, received_value = received.get(stamp) or received.setdefault(
        stamp, _timestamp(stamp)
    )
    verdict = scoring.verdict(
        {
            **texts,
            "email_domain": email_domain(email),
            "tier": tier,
        }
    )
    values = (
        trace_id,
        str(tenant_id),
        "t" if entry.get("demoted") else "f",
        tier,
        email,
        name,
        phone,
        company,
        source,
        campaign_id,
        region,
        payload,
        received_value,
    )
    decided = decided_by_verdict.get(verdict)
    if decided is None:
        decided = decided_by_verdict[verdict] = (
            LeadStatus.QUALIFIED.value,
            str(verdict.score),
            "t" if verdict.qualified else "f",
            orjson.dumps(list(verdict.reasons)).decode(),
            None,  # duplicate_of
            now_text,
        )
    return _Lead(
        trace_id,
        tenant_id,
        email,
        received_at,
        values,
        verdict.qualified,
        decided,
        entry,
        bool(entry.get("replay")),
    )


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _text_check(column: str, value) -> None:
    """_Refused naming the field, for a value no text column can hold."""
    if not isinstance(value, str):
        raise _Refused("not_text", f"{column} is not text: {type(value).__name__}")
    if "\x00" in value:
        raise _Refused("nul_character", f"{column} holds a NUL character")
    if not _utf8(value):
        raise _Refused("bad_unicode", f"{column} holds a lone surrogate")


def _payload_json(payload) -> str:
    """The payload as JSON text for its jsonb column; _Refused for what jsonb cannot hold."""
    if not isinstance(payload, dict):
        raise _Refused("bad_payload", f"payload is not an object: {type(payload).__name__}")
    text = orjson.dumps(payload).decode()
    # jsonb refuses \u0000 (it cannot hold a NUL in text); orjson writes one for any NUL.
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise _Refused("nul_character", "payload holds a NUL character")
    return text


def _tenant_lock_and_read(
    conn: psycopg.Connection, tenant_id: int, leads: list[_Lead], replays: list[str]
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
                "not_originals": _array_literal([_DUPLICATE, LeadStatus.FAILED.value]),
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


@functools.cache
def _copy_statement() -> str:
    """COPY into the leads table; fails loudly if the model has a column the COPY would miss
    (the columns have no defaults in PostgreSQL: Django applies them, and COPY bypasses it)."""
    columns = (*_LEAD_COLUMNS, *_DECIDED_COLUMNS, *_BATCH_COLUMNS)
    model_columns = {f.column for f in Lead._meta.concrete_fields}
    if set(columns) != model_columns:
        raise ImproperlyConfigured(
            "pool A's COPY and the Lead model disagree: the model has "
            f"{sorted(model_columns - set(columns))} that apps/leads/services.py does not write"
            f" and no {sorted(set(columns) - model_columns)}"
        )
    quote = connection.ops.quote_name
    return f"COPY {quote(Lead._meta.db_table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"


def _timestamp(epoch: float) -> tuple[datetime, str]:
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment, moment.isoformat()
