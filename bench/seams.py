"""Everything the bench reads or calls inside the application, in one place.

The scenarios drive LeadFlow through its HTTP API and its Procfile processes; only what they
cannot reach that way comes through here (tenants, resetting state, counting stored rows,
taking prepared entries from the inboxes, pool A's write service). When the application's
internals move, this is the file to adjust.
"""

import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import redis

from leadflow import redis_keys


def django_setup() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "leadflow.settings"
    import django

    django.setup()


@dataclass(frozen=True)
class BenchTenant:
    tenant_id: int
    name: str
    key: str


def tenants_prepare(count: int, limits: dict[str, float]) -> list[BenchTenant]:
    """`count` bench tenants, each with a fresh API key and the given admission limits set on
    whichever of those fields the Tenant model has (the bench sends more than a default tenant
    may: its rate limit would turn an intake benchmark into a benchmark of 429s)."""
    from apps.tenants.models import Tenant
    from apps.tenants.services import api_key_create, tenant_create

    tenants = []
    for index in range(1, count + 1):
        name = f"bench-{index}"
        tenant = Tenant.objects.filter(name=name).first()
        if tenant is None:
            tenant, key = tenant_create(name)
        else:
            key = api_key_create(tenant, label="bench")
        changed = []
        for field_name, value in limits.items():
            if hasattr(tenant, field_name):
                setattr(tenant, field_name, value)
                changed.append(field_name)
        if changed:
            tenant.save(update_fields=changed)
        tenants.append(BenchTenant(tenant.id, name, key))
    return tenants


def tenant_fields(tenant_id: int) -> dict:
    from django.forms.models import model_to_dict

    from apps.tenants.models import Tenant

    fields = model_to_dict(Tenant.objects.get(id=tenant_id))
    fields.pop("crm_webhook_secret", None)
    return fields


# Tables emptied between runs: everything a lead leaves behind, never tenants or keys.
_APPS_RESET = ("leads", "enrichment", "crm", "control", "usage")


def state_reset() -> None:
    """Empty the bench's Redis database and the lead tables, so every run starts alike."""
    from django.apps import apps
    from django.db import connection

    from leadflow.redis_conn import get_redis

    client = get_redis()
    client.flushdb()
    # With AOF on (the embedded Redis), the log still holds every lead written before the flush:
    # rewrite it, or each start of the server replays gigabytes of deleted benchmark data.
    if _config_value(client, "appendonly") == "yes":
        with contextlib.suppress(redis.ResponseError):  # a rewrite already running will do
            client.bgrewriteaof()
    tables = []
    for label in _APPS_RESET:
        try:
            config = apps.get_app_config(label)
        except LookupError:
            continue
        tables += [model._meta.db_table for model in config.get_models()]
    if tables:
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")


def _config_value(client, name: str) -> str:
    found = client.config_get(name)
    value = found.get(name, found.get(name.encode(), b""))
    return value.decode() if isinstance(value, bytes) else str(value)


def stored_count() -> int:
    """Leads pool A has stored (qualified, or recognised as duplicates)."""
    from apps.leads.models import Lead

    return Lead.objects.count()


def qualified_count() -> int:
    from apps.leads.models import Lead

    return Lead.objects.filter(qualified_at__isnull=False).count()


def synced_count() -> int:
    """Leads pool C has delivered to their CRM (status synced)."""
    from apps.leads.models import Lead, LeadStatus

    return Lead.objects.filter(status=LeadStatus.SYNCED).count()


@dataclass(frozen=True)
class StoredLead:
    email: str
    tier: str
    status: str
    received_at: datetime
    qualified_at: datetime | None


def leads_sent_critical() -> list[StoredLead]:
    """Stored leads the client sent as critical (the bench marks their emails "crit-")."""
    from apps.leads.models import Lead

    rows = Lead.objects.filter(email__startswith="crit-").values_list(
        "email", "tier", "status", "received_at", "qualified_at"
    )
    return [StoredLead(*row) for row in rows]


def redis_critical_waiting() -> int:
    """Critical leads still waiting in the inboxes."""
    from apps import inbox

    backlog = inbox.backlog_by_tier()
    return backlog["critical"].waiting if "critical" in backlog else 0


def inbox_waiting() -> int:
    from apps import inbox

    return sum(b.waiting for b in inbox.backlog_by_tier().values())


def inbox_take(limit: int) -> list[list[bytes]]:
    """Take up to `limit` leads from the inboxes as the dispatcher does (tier order, batches of
    at most DISPATCH_BATCH_MAX), releasing the in-flight copies at once: the bench handles them
    itself. Returns the raw entries, batch by batch."""
    from django.conf import settings

    from apps import inbox
    from leadflow.queues import TIERS

    batches: list[list[bytes]] = []
    taken = 0
    for tier in TIERS:
        for tenant_id in inbox.active_tenants(tier):
            while taken < limit:
                batch = inbox.claim_batch(
                    tier, [tenant_id], min(settings.DISPATCH_BATCH_MAX, limit - taken)
                )
                if batch is None:
                    break
                inbox.release_batch(batch.batch_id)
                batches.append(batch.entries)
                taken += len(batch.entries)
    return batches


def dispatch_batch_max() -> int:
    from django.conf import settings

    return settings.DISPATCH_BATCH_MAX


def entries_decode(raw_entries: list[bytes]) -> list[dict]:
    from apps import inbox

    return inbox.entries_decode(raw_entries)


def leads_qualify(entries: list[dict]) -> None:
    """Pool A's write path: normalize, dedup, score and store a batch in bulk."""
    from apps.leads.services import leads_qualify as qualify

    qualify(entries)


def leads_qualify_routed(entries: list[dict]) -> tuple[list[str], list[str]]:
    """Pool A's service on a batch; returns (to enrich, to sync), as pool A routes them while
    nothing is shed."""
    from apps.leads.services import leads_qualify as qualify

    outcome = qualify(entries)
    return outcome.to_enrich, outcome.to_sync


def leads_enrich(trace_ids: list[str]) -> list[str]:
    """Pool B's service on a batch; returns the leads it hands to pool C."""
    from apps.enrichment.services import leads_enrich as enrich

    return enrich(trace_ids).enriched


def leads_sync(trace_ids: list[str]) -> None:
    """Pool C's service on a batch (the configured CRM adapter; the bench's is local)."""
    from apps.crm.services import leads_sync as sync

    sync(trace_ids)


def database_backend_pid() -> int:
    """The PostgreSQL backend serving this process's Django connection."""
    from django.db import connection

    connection.ensure_connection()
    return connection.connection.info.backend_pid


@contextlib.contextmanager
def statements_counted():
    """Counts the statements this process sends PostgreSQL while inside, whichever way they go
    (the ORM, a Django cursor, or psycopg directly: pool A copies through psycopg): psycopg's
    cursor methods are wrapped for the while. Yields a dict whose "statements" grows."""
    import psycopg

    counted = {"statements": 0}
    originals = {name: getattr(psycopg.Cursor, name) for name in ("execute", "executemany", "copy")}

    def counting(original):
        def wrapper(self, *args, **kwargs):
            counted["statements"] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(psycopg.Cursor, name, counting(original))
    try:
        yield counted
    finally:
        for name, original in originals.items():
            setattr(psycopg.Cursor, name, original)


def lead_table() -> tuple[str, list[str]]:
    """The leads table and its columns, for the COPY reference."""
    from apps.leads.models import Lead

    columns = [f.column for f in Lead._meta.concrete_fields]
    return Lead._meta.db_table, columns


def lead_model():
    from apps.leads.models import Lead

    return Lead


def new_trace_id() -> str:
    return str(uuid.uuid4())


def platform_mode() -> str:
    """The mode the controller last published (what the intake reads)."""
    from leadflow.redis_conn import get_redis

    try:
        raw = get_redis().get(redis_keys.MODE_KEY)
    except Exception as exc:  # noqa: BLE001 - the key's type may change with the controller
        return f"unreadable ({exc})"
    return raw.decode() if raw else "normal"


def pool_task_runs() -> dict[str, int]:
    """Task runs so far of each pool's worker (its leadflow_stage_tasks counter, every outcome),
    read from the metrics each worker serves: one Celery message consumed a run. A pool whose
    metrics cannot be read is left out."""
    import httpx
    from django.conf import settings

    runs = {}
    for pool, port in settings.POOL_METRICS_PORTS.items():
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10.0).text
        except httpx.HTTPError:
            continue
        runs[pool] = round(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("leadflow_stage_tasks_total{")
            )
        )
    return runs


def control_wait_ticked(timeout: float) -> None:
    """Wait until the controller has published its first mode (its first tick is over)."""
    from leadflow.redis_conn import get_redis

    deadline = time.monotonic() + timeout
    while not get_redis().exists(redis_keys.MODE_KEY):
        if time.monotonic() > deadline:
            raise RuntimeError(f"control published no mode within {timeout:.0f} s")
        time.sleep(0.05)


RECEIPT_COLUMNS = (
    "accepted",
    "demoted",
    "duplicates",
    "refused_ip_rate",
    "refused_tenant_rate",
    "refused_hourly_budget",
    "refused_backpressure",
    "sampled",
    "deferred",
    "backfilled",
    "quarantined",
    "dead_lettered",
    "synced",
)


def receipts(tenants: list, since: datetime) -> dict[str, dict]:
    """Each bench tenant's overload receipt since `since` (apps/usage), written first as the
    control process writes it: counts summed over the hours, the p50/p99 received→synced of the
    hour with the most deliveries (percentiles of different hours do not add up)."""
    from django.utils import timezone

    from apps.usage.receipt import receipts_flush, tenant_receipt

    receipts_flush()
    now = timezone.now()
    found = {}
    for tenant in tenants:
        hours = tenant_receipt(tenant.tenant_id, since, now, now=now)
        row = {name: sum(getattr(hour, name) for hour in hours) for name in RECEIPT_COLUMNS}
        busiest = max(hours, key=lambda hour: hour.synced, default=None)
        row["synced_p50_s"] = busiest.synced_p50_seconds if busiest else None
        row["synced_p99_s"] = busiest.synced_p99_seconds if busiest else None
        found[tenant.name] = row
    return found


def control_history(since: float) -> list[dict]:
    """The controller's samples since `since` (epoch s), oldest first: the mode and each tier's
    backlog, lag and drain rate, one a tick (apps/control/history.py keeps 15 minutes)."""
    from apps.control.history import history_read

    return [sample for sample in history_read(time.time() - since + 1) if sample["at"] >= since]
