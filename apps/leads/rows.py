"""One lead's row for pool A's COPY: its values, normalized and scored, before the tenant's
lock is taken; and what PostgreSQL would refuse of it, found here rather than by the COPY.

Every value is text (COPY's text format parses it by column), so psycopg's text dumper only
escapes it; its UUID, datetime and bool dumpers cost ~40 times as much a row.
"""

import functools
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from apps.leads.models import Lead, LeadStatus, Tier
from apps.leads.normalization import email_domain, email_normalize, phone_normalize
from apps.leads.scoring import Scoring, Verdict

# The COPY's columns, in four groups: known before dedup (built before the lock), decided by
# dedup and scoring, the same for the whole batch, and the quarantine's (empty: not failed).
LEAD_COLUMNS = (
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
DECIDED_COLUMNS = (
    "status",
    "score",
    "is_qualified",
    "score_reasons",
    "duplicate_of",
    "qualified_at",
)
BATCH_COLUMNS = (
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
    "anonymized_at",  # retention (apps/retention): a new lead is not
)
COPY_COLUMNS = (*LEAD_COLUMNS, *DECIDED_COLUMNS, *BATCH_COLUMNS)
STATUS_COLUMN = COPY_COLUMNS.index("status")
COPY_TYPES = ["text"] * len(COPY_COLUMNS)
DUPLICATE = LeadStatus.DUPLICATE.value
_TIERS = frozenset(Tier.values)
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@dataclass(slots=True)
class PreparedLead:
    trace_id: str
    tenant_id: int
    email: str
    received_at: datetime
    values: tuple  # the LEAD_COLUMNS
    qualified: bool
    decided: tuple  # the DECIDED_COLUMNS were the lead not a duplicate
    entry: dict  # as it came from the inbox, for the quarantine
    replay: bool  # an operator replays it: a failed row of it is replaced


class Refused(Exception):
    """A lead pool A can tell PostgreSQL would refuse, and why (checked before the COPY)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def duplicate_decided(original: str) -> tuple:
    return (DUPLICATE, None, None, "[]", original, None)


# Text columns and their sizes, checked after normalization (the intake checks what it was sent).
_TEXT_LIMITS = {
    f.column: f.max_length
    for f in Lead._meta.concrete_fields
    if f.column in ("email", "name", "phone", "company", "source", "campaign_id", "region")
}
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")  # an escaped NUL, not an escaped backslash


def lead_prepare(
    entry: dict,
    scoring: Scoring,
    now_text: str,
    received: dict[float, tuple[datetime, str]],
    decided_by_verdict: dict[Verdict, tuple],
) -> "PreparedLead":
    """Normalize and score one inbox entry, and its row's values but for dedup's part.

    Raises Refused for what PostgreSQL would refuse (a NUL, a value over its column's size),
    so such a lead is quarantined before the COPY rather than found by it.
    """
    # Long on purpose: it runs once per lead in pool A's hot loop (make bench: writes), and a
    # helper call per field would cost more than the work; the steps read top to bottom.
    trace_id = entry["trace_id"]
    if not (isinstance(trace_id, str) and _CANONICAL_UUID.fullmatch(trace_id)):
        trace_id = str(uuid.UUID(str(trace_id)))
    tenant_id = int(entry["tenant_id"])
    tier = entry["tier"]
    if tier not in _TIERS:
        raise Refused("bad_tier", f"tier {tier!r} is not one of {sorted(_TIERS)}")
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
            raise Refused(
                "too_long",
                f"{column} is {len(value)} characters once normalized; the limit is "
                f"{_TEXT_LIMITS[column]}",
            )
    payload = _payload_json(entry.get("payload") or {})
    stamp = entry["received_at"]
    received_at, received_value = received.get(stamp) or received.setdefault(
        stamp, timestamp_values(stamp)
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
    return PreparedLead(
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
    """Refused naming the field, for a value no text column can hold."""
    if not isinstance(value, str):
        raise Refused("not_text", f"{column} is not text: {type(value).__name__}")
    if "\x00" in value:
        raise Refused("nul_character", f"{column} holds a NUL character")
    if not _utf8(value):
        raise Refused("bad_unicode", f"{column} holds a lone surrogate")


def _payload_json(payload) -> str:
    """The payload as JSON text for its jsonb column; Refused for what jsonb cannot hold."""
    if not isinstance(payload, dict):
        raise Refused("bad_payload", f"payload is not an object: {type(payload).__name__}")
    text = orjson.dumps(payload).decode()
    # jsonb refuses \u0000 (it cannot hold a NUL in text); orjson writes one for any NUL.
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise Refused("nul_character", "payload holds a NUL character")
    return text


@functools.cache
def copy_statement() -> str:
    """COPY into the leads table; fails loudly if the model has a column the COPY would miss
    (the columns have no defaults in PostgreSQL: Django applies them, and COPY bypasses it)."""
    columns = (*LEAD_COLUMNS, *DECIDED_COLUMNS, *BATCH_COLUMNS)
    model_columns = {f.column for f in Lead._meta.concrete_fields}
    if set(columns) != model_columns:
        raise ImproperlyConfigured(
            "pool A's COPY and the Lead model disagree: the model has "
            f"{sorted(model_columns - set(columns))} that apps/leads/services.py does not write"
            f" and no {sorted(set(columns) - model_columns)}"
        )
    quote = connection.ops.quote_name
    return f"COPY {quote(Lead._meta.db_table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN"


def timestamp_values(epoch: float) -> tuple[datetime, str]:
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment, moment.isoformat()
