"""Pool A's write: normalize, dedup semantically, score, and store a batch of leads in bulk."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from apps.leads.models import Lead, LeadStatus
from apps.leads.normalization import email_domain, email_normalize, phone_normalize
from apps.leads.scoring import scoring_current

SEMANTIC_DEDUP_WINDOW = timedelta(hours=24)
# Namespace of the advisory lock that serializes one tenant's semantic dedup across pool A.
_DEDUP_LOCK_NAMESPACE = 0x1EAD


@dataclass
class QualifyOutcome:
    """Where each lead of the batch goes next."""

    to_enrich: list[str] = field(default_factory=list)  # qualified: pool B, then C
    to_sync: list[str] = field(default_factory=list)  # under the threshold: straight to C


def _lead_row(entry: dict) -> Lead:
    email = email_normalize(entry["email"])
    return Lead(
        trace_id=entry["trace_id"],
        tenant_id=entry["tenant_id"],
        tier=entry["tier"],
        demoted=entry.get("demoted", False),
        email=email,
        name=entry.get("name", ""),
        phone=phone_normalize(entry.get("phone", ""), entry.get("region", "")),
        company=entry.get("company", ""),
        source=entry.get("source", ""),
        campaign_id=entry.get("campaign_id", ""),
        region=entry.get("region", ""),
        payload=entry.get("payload") or {},
        received_at=datetime.fromtimestamp(entry["received_at"], tz=UTC),
    )


def _earlier_leads_by_email(tenant_id: int, rows: list[Lead]) -> dict[str, tuple[str, datetime]]:
    """The first non-duplicate lead of each email in the dedup window, outside this batch."""
    since = min(row.received_at for row in rows) - SEMANTIC_DEDUP_WINDOW
    found = (
        Lead.objects.filter(
            tenant_id=tenant_id, email__in={row.email for row in rows}, received_at__gte=since
        )
        .exclude(trace_id__in=[row.trace_id for row in rows])
        .exclude(status=LeadStatus.DUPLICATE)
        .order_by("received_at")
        .values_list("email", "trace_id", "received_at")
    )
    first: dict[str, tuple[str, datetime]] = {}
    for email, trace_id, received_at in found:
        first.setdefault(email, (str(trace_id), received_at))
    return first


def leads_qualify(entries: list[dict]) -> QualifyOutcome:
    """Store the batch idempotently (by trace id) and say where each lead goes next.

    A redelivered batch inserts nothing new; the outcome is read back from the stored rows,
    so the next stages get the leads that still need them.
    """
    scoring = scoring_current()
    rows = [_lead_row(entry) for entry in entries]
    by_tenant: dict[int, list[Lead]] = {}
    for row in rows:
        by_tenant.setdefault(row.tenant_id, []).append(row)

    now = timezone.now()
    with transaction.atomic():
        for tenant_id, tenant_rows in sorted(by_tenant.items()):
            # Two pool A processes holding the same tenant's batches must not both decide
            # that the same email is new: they take turns per tenant.
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", [_DEDUP_LOCK_NAMESPACE, tenant_id]
                )
            seen = _earlier_leads_by_email(tenant_id, tenant_rows)
            for row in tenant_rows:
                earlier = seen.get(row.email)
                if earlier and earlier[1] >= row.received_at - SEMANTIC_DEDUP_WINDOW:
                    row.status = LeadStatus.DUPLICATE
                    row.duplicate_of = earlier[0]
                    continue
                seen[row.email] = (str(row.trace_id), row.received_at)
                lead_view = {**row.__dict__, "email_domain": email_domain(row.email)}
                row.score, row.is_qualified, row.score_reasons = scoring.score(lead_view)
                row.status = LeadStatus.QUALIFIED
                row.qualified_at = now
        Lead.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)

    outcome = QualifyOutcome()
    stored = Lead.objects.filter(
        trace_id__in=[row.trace_id for row in rows], status=LeadStatus.QUALIFIED
    ).values_list("trace_id", "is_qualified")
    for trace_id, is_qualified in stored:
        (outcome.to_enrich if is_qualified else outcome.to_sync).append(str(trace_id))
    return outcome
