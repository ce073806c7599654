"""Pool A's write: normalize, dedup semantically, score, and store a batch of leads in bulk.

A batch reaches PostgreSQL as one COPY per tenant, in COPY's text format built here: the ORM's
bulk_create spent most of a batch adapting values one at a time (README, "Pool A's write
path"). What does not depend on other leads (normalizing, scoring, most of each row's text) is
done before the tenant's advisory lock is taken; under the lock one round trip reads what dedup
needs and the batch's rows already stored, then the new rows are copied.
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

from apps.leads.models import Lead, LeadStatus
from apps.leads.normalization import email_domain, email_normalize, phone_normalize
from apps.leads.scoring import Scoring, Verdict, scoring_current
from apps.tenants.models import Tenant

log = logging.getLogger(__name__)

SEMANTIC_DEDUP_WINDOW = timedelta(hours=24)
# Namespace of the advisory lock that serializes one tenant's semantic dedup across pool A.
_DEDUP_LOCK_NAMESPACE = 0x1EAD

# The COPY's columns, in three groups: known before dedup (one string per lead, built before
# the lock), decided by dedup and scoring, and the same for the whole batch.
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
)
_DUPLICATE = LeadStatus.DUPLICATE.value
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
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
    row: str  # the _LEAD_COLUMNS in COPY's text format, tab-separated
    qualified: bool
    decided: str  # the _DECIDED_COLUMNS were the lead not a duplicate


def leads_qualify(entries: list[dict]) -> QualifyOutcome:
    """Store the batch idempotently (by trace id) and say where each lead goes next.

    A redelivered batch inserts nothing new; the outcome of a lead already stored is read from
    its stored row, so the next stages get the leads that still need them.
    """
    scoring = scoring_current()
    now_text = timezone.now().isoformat()
    received: dict[float, tuple[datetime, str]] = {}  # a request's leads share one timestamp
    decided: dict[Verdict, str] = {}  # a batch holds a few distinct verdicts
    by_tenant: dict[int, list[_Lead]] = {}
    for entry in entries:
        lead = _lead_prepare(entry, scoring, now_text, received, decided)
        by_tenant.setdefault(lead.tenant_id, []).append(lead)
    tail = f"\tf\tf\tf\t\\N\t\\N\t{now_text}\n"  # the _BATCH_COLUMNS

    outcome = QualifyOutcome()
    done: set[str] = set()  # a trace id twice in a batch is stored, and sent on, once
    with transaction.atomic(), connection.wrap_database_errors:
        conn = connection.connection
        # Sorted: two processes holding batches of the same tenants lock them in one order.
        for tenant_id, leads in sorted(by_tenant.items()):
            tenant_exists, stored, seen = _tenant_lock_and_read(conn, tenant_id, leads)
            if not tenant_exists:
                # Deleted while its leads waited (deleting a tenant deletes its leads). Stored,
                # they would fail the whole batch, and a batch holds other tenants' leads too.
                log.warning(
                    "dropping %d leads of tenant %s, which no longer exists", len(leads), tenant_id
                )
                continue
            rows = []
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
                    rows.append(f"{lead.row}\t{_DUPLICATE}\t\\N\t\\N\t[]\t{earlier[0]}\t\\N{tail}")
                else:
                    rows.append(f"{lead.row}\t{lead.decided}{tail}")
                    (outcome.to_enrich if lead.qualified else outcome.to_sync).append(lead.trace_id)
            if rows:
                with psycopg.Cursor(conn) as cursor, cursor.copy(_copy_statement()) as copy:
                    copy.write("".join(rows))
    return outcome


def _lead_prepare(
    entry: dict,
    scoring: Scoring,
    now_text: str,
    received: dict[float, tuple[datetime, str]],
    decided_by_verdict: dict[Verdict, str],
) -> _Lead:
    """Normalize and score one inbox entry, and write its row's text but for dedup's part."""
    trace_id = entry["trace_id"]
    if not (isinstance(trace_id, str) and _CANONICAL_UUID.fullmatch(trace_id)):
        trace_id = str(uuid.UUID(str(trace_id)))
    tenant_id = int(entry["tenant_id"])
    tier = entry["tier"]
    email = email_normalize(entry["email"])
    region = entry.get("region") or ""
    phone = phone_normalize(entry.get("phone") or "", region)
    name = entry.get("name") or ""
    company = entry.get("company") or ""
    source = entry.get("source") or ""
    campaign_id = entry.get("campaign_id") or ""
    stamp = entry["received_at"]
    received_at, received_text = received.get(stamp) or received.setdefault(
        stamp, _timestamp(stamp)
    )
    verdict = scoring.verdict(
        {
            "email": email,
            "email_domain": email_domain(email),
            "name": name,
            "phone": phone,
            "company": company,
            "source": source,
            "campaign_id": campaign_id,
            "region": region,
            "tier": tier,
        }
    )
    texts = (tier, email, name, phone, company, source, campaign_id, region)
    try:
        text = "\t".join(texts)
    except TypeError:  # not all strings: each value the slow way
        text = None
    # One scan of the joined text instead of four per value: a value holding a tab shows up
    # as one tab too many.
    if text is None or (
        text.count("\t") != len(texts) - 1 or "\\" in text or "\n" in text or "\r" in text
    ):
        text = "\t".join(_copy_text(value) for value in texts)
    row = "\t".join(
        (
            trace_id,
            str(tenant_id),
            "t" if entry.get("demoted") else "f",
            text,
            _copy_json(entry.get("payload") or {}),
            received_text,
        )
    )
    decided = decided_by_verdict.get(verdict)
    if decided is None:
        decided = decided_by_verdict[verdict] = "\t".join(
            (
                LeadStatus.QUALIFIED.value,
                str(verdict.score),
                "t" if verdict.qualified else "f",
                _copy_json(list(verdict.reasons)),
                "\\N",  # duplicate_of
                now_text,
            )
        )
    return _Lead(trace_id, tenant_id, email, received_at, row, verdict.qualified, decided)


def _tenant_lock_and_read(
    conn: psycopg.Connection, tenant_id: int, leads: list[_Lead]
) -> tuple[bool, dict[str, tuple[str, bool | None]], dict[str, tuple[str, datetime]]]:
    """Take the tenant's dedup lock, then read, in the same round trip: whether the tenant
    still exists; the batch's leads already stored, {trace id: (status, is_qualified)}; and the
    first non-duplicate lead of each of the batch's emails in the dedup window, outside the
    batch, {email: (trace id, received_at)}.

    Two pool A processes holding the same tenant's batches must not both decide that the same
    email is new: they take turns per tenant, until the transaction ends. The reads are
    statements after the lock's (one simple query, run in order), so each takes its snapshot
    once the lock is held and sees what the previous holder committed. Only this function
    writes leads, always under the lock of the lead's tenant, and a trace id is one lead's: the
    rows found stored here are all those the COPY could collide with.
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
            f" SELECT EXISTS (SELECT 1 FROM {tenants_table} WHERE id = %(tenant)s);"
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
            "   AND received_at >= %(since)s AND status <> %(duplicate)s"
            "   AND trace_id <> ALL(%(trace_ids)s::uuid[])"
            "   ORDER BY received_at LIMIT 1"
            " ) AS earlier",
            {
                "namespace": _DEDUP_LOCK_NAMESPACE,
                "tenant": tenant_id,
                "trace_ids": _array_literal(trace_ids),
                "emails": _array_literal(emails),
                "since": since,
                "duplicate": LeadStatus.DUPLICATE.value,
            },
        )
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


def _copy_text(value: str) -> str:
    """A text value in COPY's text format: backslash, tab and line ends escaped."""
    if not isinstance(value, str):
        value = str(value)
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _copy_json(value) -> str:
    # orjson escapes every control character inside strings, so only backslashes remain.
    return orjson.dumps(value).decode().replace("\\", "\\\\")


def _timestamp(epoch: float) -> tuple[datetime, str]:
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment, moment.isoformat()
