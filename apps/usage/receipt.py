"""The overload receipt, per tenant and UTC hour: how it is counted, written and read.

Two sources, each counted where the event already leaves a trace, so nothing on the hot path
changes but one HINCRBY inside the admission script it already runs:
- the intake's answers per lead (accepted, demoted, duplicate, refused by each limit): a
  Redis hash per tenant, "<epoch hour>|<kind>" -> leads, counted by apps/intake/lua/admit.lua;
- what became of the leads afterwards: PostgreSQL's own rows, counted by hour when the receipt
  is written: the deferred ledger (sampled out, deferred, backfilled), quarantined leads
  (failed_at), dead letters (created_at), and CRM deliveries (synced_at) with the p50 and p99
  of their time from received to synced (percentile_cont).

The control process writes the rows (`receipts_flush`, every LEADFLOW_RECEIPT_FLUSH_SECONDS):
an upsert of absolute numbers per (tenant, hour), so a repeat, or two writers, give the same
rows. An hour is recomputed until a flush after its end (+ FINAL_AFTER) has written it (its CRM
deliveries, the costly count, every LEADFLOW_RECEIPT_DELIVERIES_SECONDS and at its end); its
Redis fields are deleted LEADFLOW_RECEIPT_OPEN_HOURS after it ends, and the row stays as it
is, whatever retention later deletes. A read (`tenant_receipt`) takes the rows and the
intake's counts from Redis over them: one HGETALL and one indexed SELECT, never the pipeline's
tables.
"""

from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Q
from django.db.models.functions import TruncHour
from django.utils import timezone

from apps.control.models import DeferredKind, DeferredReason, DeferredWork
from apps.crm.models import CrmSync, DeadLetter
from apps.leads.models import Lead, LeadStatus
from apps.tenants.models import Tenant
from apps.usage.models import HourlyReceipt
from leadflow.redis_conn import cluster_enabled, get_inbox_redis
from leadflow.redis_keys import receipt_key

HOUR = timedelta(hours=1)

# admit.lua's kinds -> the receipt's fields.
INTAKE_FIELDS = {
    "accepted": "accepted",
    "demoted": "demoted",
    "duplicate": "duplicates",
    "ip_rate": "refused_ip_rate",
    "tenant_rate": "refused_tenant_rate",
    "hourly_budget": "refused_hourly_budget",
    "backpressure": "refused_backpressure",
}


@dataclass
class HourReceipt:
    """One tenant's hour, as the API answers it (the model's fields, the hour as a datetime)."""

    hour: datetime
    accepted: int = 0
    demoted: int = 0
    duplicates: int = 0
    refused_ip_rate: int = 0
    refused_tenant_rate: int = 0
    refused_hourly_budget: int = 0
    refused_backpressure: int = 0
    sampled: int = 0
    deferred: int = 0
    backfilled: int = 0
    quarantined: int = 0
    dead_lettered: int = 0
    synced: int = 0
    synced_p50_seconds: float | None = None
    synced_p99_seconds: float | None = None

    @property
    def refused(self) -> int:
        return (
            self.refused_ip_rate
            + self.refused_tenant_rate
            + self.refused_hourly_budget
            + self.refused_backpressure
        )

    def empty(self) -> bool:
        return not any(getattr(self, name) for name in COUNTS)


COUNTS = tuple(
    f.name for f in fields(HourReceipt) if f.name != "hour" and not f.name.endswith("_seconds")
)
ROW_FIELDS = (*COUNTS, "synced_p50_seconds", "synced_p99_seconds")


def hour_floor(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hours_between(first: datetime, last: datetime) -> list[datetime]:
    """Every hour from `first` to `last`, both included (hour starts)."""
    hours, hour = [], hour_floor(first)
    while hour <= last:
        hours.append(hour)
        hour += HOUR
    return hours


def _open_from(now: datetime) -> datetime:
    """The first hour still open: later events may still land in it."""
    return hour_floor(now) - settings.RECEIPT_OPEN_HOURS * HOUR


# --- reading the two sources ---


# The key layout before shards kept the receipt in a hash of its own: after an upgrade, what it
# still counts (hours not yet written) is added into the tenant's hash, then it is deleted.
_LEGACY_RECEIPT = "lf:receipt:{tenant_id}"
_LEGACY_MERGE = """
local fields = redis.call("HGETALL", KEYS[1])
for i = 1, #fields, 2 do
  redis.call("HINCRBY", KEYS[2], fields[i], fields[i + 1])
end
if #fields > 0 then
  redis.call("EXPIRE", KEYS[2], 259200)
end
redis.call("DEL", KEYS[1])
return #fields / 2
"""


def _legacy_receipts_merge(tenant_ids: list[int]) -> None:
    """Not on a Redis Cluster (it never held the old layout; the keys span slots)."""
    if cluster_enabled():
        return
    client = get_inbox_redis()
    pipe = client.pipeline(transaction=False)
    for tenant_id in tenant_ids:
        pipe.exists(_LEGACY_RECEIPT.format(tenant_id=tenant_id))
    for tenant_id, present in zip(tenant_ids, pipe.execute(), strict=True):
        if present:
            client.eval(
                _LEGACY_MERGE,
                2,
                _LEGACY_RECEIPT.format(tenant_id=tenant_id),
                receipt_key(tenant_id),
            )


def _intake_read(tenant_ids: list[int]) -> dict[int, dict[bytes, bytes]]:
    """Each tenant's Redis hash, in one round trip (two, the first after an upgrade)."""
    _legacy_receipts_merge(tenant_ids)
    pipe = get_inbox_redis().pipeline(transaction=False)
    for tenant_id in tenant_ids:
        pipe.hgetall(receipt_key(tenant_id))
    return dict(zip(tenant_ids, pipe.execute(), strict=True))


def _field_parse(name: bytes) -> tuple[int, str] | None:
    """A receipt field's (epoch hour, kind); None for anything admit.lua does not write (a bad
    field must not stop the control process's database thread: it is left to expire)."""
    epoch_hour, _, kind = name.decode(errors="replace").partition("|")
    if kind not in INTAKE_FIELDS or not epoch_hour.isdigit():
        return None
    return int(epoch_hour), kind


def _intake_counts(raw: dict[int, dict[bytes, bytes]]) -> dict[tuple[int, datetime], dict]:
    counts: dict[tuple[int, datetime], dict] = defaultdict(dict)
    for tenant_id, hash_fields in raw.items():
        for name, value in hash_fields.items():
            parsed = _field_parse(name)
            if parsed is None or not value.isdigit():
                continue
            hour = datetime.fromtimestamp(parsed[0] * 3600, tz=UTC)
            counts[(tenant_id, hour)][INTAKE_FIELDS[parsed[1]]] = int(value)
    return counts


def _pipeline_counts(
    start: datetime, end: datetime, tenant_id: int | None, sync_hours: set[datetime]
) -> dict[tuple[int, datetime], dict]:
    """PostgreSQL's records of [start, end), by tenant and hour (one tenant, or all); the CRM
    deliveries only of `sync_hours` (the costly part: a join with the leads and a sort)."""
    counts: dict[tuple[int, datetime], dict] = defaultdict(dict)
    mine = Q() if tenant_id is None else Q(tenant_id=tenant_id)

    def by_hour(queryset, column: str):
        return (
            queryset.filter(mine, **{f"{column}__gte": start, f"{column}__lt": end})
            .annotate(at_hour=TruncHour(column, tzinfo=UTC))
            .order_by()
        )

    for row in (
        by_hour(DeferredWork.objects, "created_at")
        .values("tenant_id", "at_hour", "kind", "reason")
        .annotate(n=Count("id"))
    ):
        # A CRM sync shed is a lead sampled out (SEVERE); the rest is deferred work.
        sampled = row["kind"] == DeferredKind.CRM_SYNC and row["reason"] == DeferredReason.SHED
        name = "sampled" if sampled else "deferred"
        bucket = counts[(row["tenant_id"], row["at_hour"])]
        bucket[name] = bucket.get(name, 0) + row["n"]
    simple = (
        ("backfilled", by_hour(DeferredWork.objects, "done_at")),
        ("quarantined", by_hour(Lead.objects.filter(status=LeadStatus.FAILED), "failed_at")),
        ("dead_lettered", by_hour(DeadLetter.objects, "created_at")),
    )
    for name, queryset in simple:
        for row in queryset.values("tenant_id", "at_hour").annotate(n=Count("pk")):
            counts[(row["tenant_id"], row["at_hour"])][name] = row["n"]
    if not sync_hours:
        return counts
    sync_range = (min(sync_hours), max(sync_hours) + HOUR)
    for tenant, hour, synced, p50, p99 in _sync_times(*sync_range, tenant_id):
        hour = hour.replace(tzinfo=UTC)
        if hour in sync_hours:
            counts[(tenant, hour)].update(
                synced=synced, synced_p50_seconds=p50, synced_p99_seconds=p99
            )
    return counts


def _sync_times(start: datetime, end: datetime, tenant_id: int | None) -> list[tuple]:
    """(tenant, hour, deliveries, p50 s, p99 s) of the CRM deliveries in [start, end)."""
    only = "" if tenant_id is None else "AND lead.tenant_id = %s"
    sql = f"""
        SELECT lead.tenant_id, date_trunc('hour', sync.synced_at AT TIME ZONE 'UTC'), count(*),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY {_SECONDS}),
               percentile_cont(0.99) WITHIN GROUP (ORDER BY {_SECONDS})
        FROM {CrmSync._meta.db_table} sync
        JOIN {Lead._meta.db_table} lead ON lead.trace_id = sync.lead_id
        WHERE sync.synced_at >= %s AND sync.synced_at < %s {only}
        GROUP BY 1, 2
    """  # noqa: S608 - table names from the models, values as parameters
    params = [start, end] if tenant_id is None else [start, end, tenant_id]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


_SECONDS = "extract(epoch FROM sync.synced_at - lead.received_at)"


def _computed(
    hours: set[datetime], intake: dict[int, dict], tenant_id: int | None, sync_hours: set
) -> dict[tuple[int, datetime], HourReceipt]:
    """The receipts of these hours, from both sources (only the non-empty ones); the CRM
    deliveries only of `sync_hours`."""
    if not hours:
        return {}
    found: dict[tuple[int, datetime], dict] = defaultdict(dict)
    for key, values in _intake_counts(intake).items():
        if key[1] in hours:
            found[key].update(values)
    pipeline = _pipeline_counts(min(hours), max(hours) + HOUR, tenant_id, sync_hours & hours)
    for key, values in pipeline.items():
        if key[1] in hours:
            found[key].update(values)
    return {key: HourReceipt(hour=key[1], **values) for key, values in found.items()}


# --- writing (the control process) ---

# An hour computed this long after its end is final: the events of its last seconds are
# committed (they carry the time they happened, a transaction lasts seconds), nothing adds to it.
FINAL_AFTER = timedelta(minutes=5)


SYNC_FIELDS = ("synced", "synced_p50_seconds", "synced_p99_seconds")


def receipts_flush(
    now: datetime | None = None, final: set[datetime] | None = None, deliveries: bool = True
) -> int:
    """Write the receipts of the open hours (and of any older hour Redis still holds) to
    PostgreSQL, but the hours in `final` (written after they ended: nothing changes them);
    add the hours final now to it; delete the Redis fields of the hours closed. The CRM
    deliveries (count, p50, p99) are counted with `deliveries`, and always for an hour that
    becomes final; otherwise a row keeps the ones written before. Returns the rows written."""
    now = now or timezone.now()
    final = set() if final is None else final
    open_from = _open_from(now)
    tenant_ids = list(Tenant.objects.values_list("id", flat=True))
    intake = _intake_read(tenant_ids)
    hours = set(hours_between(open_from, now)) | {hour for _, hour in _intake_counts(intake)}
    hours -= final
    ending = {hour for hour in hours if hour + HOUR + FINAL_AFTER <= now}
    sync_hours = hours if deliveries else ending
    receipts = _computed(hours, intake, None, sync_hours)
    try:
        with transaction.atomic():
            receipts_write(receipts, sync_hours)
    except IntegrityError:
        # A tenant deleted since its id was read above (its rows go with it): write the others,
        # rather than fail the control process for every tenant.
        alive = set(
            Tenant.objects.filter(id__in={t for t, _ in receipts}).values_list("id", flat=True)
        )
        receipts = {key: value for key, value in receipts.items() if key[0] in alive}
        with transaction.atomic():
            receipts_write(receipts, sync_hours)
    _closed_forget(intake, open_from)
    final |= ending
    final -= {hour for hour in final if hour < open_from}  # Redis holds none of them any more
    return len(receipts)


def receipts_write(receipts: dict[tuple[int, datetime], HourReceipt], sync_hours: set) -> None:
    """Upsert the rows, each with its CRM deliveries only when its hour is in `sync_hours`
    (else the row keeps the ones written before)."""
    for with_sync in (True, False):
        fields = ROW_FIELDS if with_sync else tuple(f for f in ROW_FIELDS if f not in SYNC_FIELDS)
        HourlyReceipt.objects.bulk_create(
            [
                HourlyReceipt(tenant_id=tenant_id, hour=hour, **_row(receipt))
                for (tenant_id, hour), receipt in receipts.items()
                if (hour in sync_hours) == with_sync
            ],
            update_conflicts=True,
            unique_fields=["tenant", "hour"],
            update_fields=[*fields, "updated_at"],
            batch_size=500,
        )


def _row(receipt: HourReceipt) -> dict:
    values = asdict(receipt)
    values.pop("hour")
    return values


def _closed_forget(intake: dict[int, dict[bytes, bytes]], open_from: datetime) -> None:
    """Delete the Redis fields of closed hours, now written (admit.lua counts only the hour
    it runs in, so nothing adds to them any more)."""
    first_open = int(open_from.timestamp()) // 3600
    pipe = get_inbox_redis().pipeline(transaction=False)
    for tenant_id, hash_fields in intake.items():
        closed = [
            name
            for name in hash_fields
            if (parsed := _field_parse(name)) is not None and parsed[0] < first_open
        ]
        if closed:
            pipe.hdel(receipt_key(tenant_id), *closed)
    pipe.execute()


class ReceiptSchedule:
    """When the control process writes the receipts: every flush interval, the CRM deliveries
    every LEADFLOW_RECEIPT_DELIVERIES_SECONDS (their join and sort grow with the hour's
    deliveries). It keeps the hours already final, so a flush recounts only the current hour and
    the hours that ended less than FINAL_AFTER ago (a new leader recounts the open hours once)."""

    def __init__(self) -> None:
        self._next_at = 0.0
        self._next_deliveries_at = 0.0
        self._final: set[datetime] = set()

    def due(self, monotonic_now: float) -> bool:
        return monotonic_now >= self._next_at

    def run(self, monotonic_now: float) -> int:
        deliveries = monotonic_now >= self._next_deliveries_at
        written = receipts_flush(final=self._final, deliveries=deliveries)
        self._next_at = monotonic_now + settings.RECEIPT_FLUSH_SECONDS
        if deliveries:
            self._next_deliveries_at = monotonic_now + settings.RECEIPT_DELIVERIES_SECONDS
        return written


# --- reading (the API, the admin) ---


def _receipts_read(
    tenant_ids: list[int], hours: list[datetime]
) -> dict[tuple[int, datetime], HourReceipt]:
    """The rows the control process wrote, with the intake's counts from Redis over them
    (live: the current hour's answers count at once; the pipeline's, at the next flush)."""
    receipts = {
        (row.tenant_id, row.hour): HourReceipt(
            hour=row.hour, **{name: getattr(row, name) for name in ROW_FIELDS}
        )
        for row in HourlyReceipt.objects.filter(
            tenant_id__in=tenant_ids, hour__gte=hours[0], hour__lte=hours[-1]
        )
    }
    wanted = set(hours)
    for (tenant_id, hour), values in _intake_counts(_intake_read(tenant_ids)).items():
        if hour in wanted:
            receipt = receipts.setdefault((tenant_id, hour), HourReceipt(hour=hour))
            for name, value in values.items():
                setattr(receipt, name, value)
    return receipts


def tenant_receipt(
    tenant_id: int, start: datetime, end: datetime, now: datetime | None = None
) -> list[HourReceipt]:
    """One row per hour from `start`'s hour to the last hour before `end` (not past the
    current hour), zeros included."""
    now = now or timezone.now()
    hours = hours_between(start, min(end - timedelta(microseconds=1), now))
    if not hours:
        return []
    receipts = _receipts_read([tenant_id], hours)
    return [receipts.get((tenant_id, hour)) or HourReceipt(hour=hour) for hour in hours]


@dataclass
class TenantDay:
    tenant: Tenant
    hours: list[HourReceipt]

    @property
    def totals(self) -> HourReceipt:
        total = HourReceipt(hour=self.hours[0].hour)
        for receipt in self.hours:
            for name in COUNTS:
                setattr(total, name, getattr(total, name) + getattr(receipt, name))
        return total


def receipts_last_day(now: datetime | None = None) -> list[TenantDay]:
    """Every tenant's last 24 hours (the current one included), for the operators."""
    now = now or timezone.now()
    hours = hours_between(now - 23 * HOUR, now)
    tenants = list(Tenant.objects.order_by("name"))
    receipts = _receipts_read([tenant.id for tenant in tenants], hours)
    return [
        TenantDay(
            tenant,
            [receipts.get((tenant.id, hour)) or HourReceipt(hour=hour) for hour in hours],
        )
        for tenant in tenants
    ]
