"""Pool C's test data: leads written straight to PostgreSQL as pool A or B leaves them."""

import contextlib
import uuid

import psycopg
from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.leads.models import Lead


def make_lead(tenant, status="enriched", is_qualified=True, tier="normal", **fields) -> Lead:
    defaults = {
        "email": f"{uuid.uuid4().hex[:8]}@example.com",
        "name": "Ada Lovelace",
        "company": "Analytical Engines",
        "source": "landing",
        "score": 80 if is_qualified else 20,
        "received_at": timezone.now(),
        "payload": {"utm": "spring"},
    }
    return Lead.objects.create(
        trace_id=uuid.uuid4(),
        tenant=tenant,
        tier=tier,
        status=status,
        is_qualified=is_qualified,
        **{**defaults, **fields},
    )


def ids(*leads: Lead) -> list[str]:
    return [str(lead.trace_id) for lead in leads]


@contextlib.contextmanager
def postgres_refusing(table: str, trace_id: str):
    """While open, PostgreSQL refuses (a DataError) to insert the row of `table` whose lead_id
    is trace_id: a lead whose data a stage cannot write, made without touching the code."""
    name = f"test_refuse_{uuid.uuid4().hex[:10]}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'refused for the test' USING ERRCODE = '22000'; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW "
            f"WHEN (NEW.lead_id = '{uuid.UUID(str(trace_id))}') EXECUTE FUNCTION {name}()"
        )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            cursor.execute(f"DROP FUNCTION IF EXISTS {name}()")


@contextlib.contextmanager
def postgres_table_locked(table: str):
    """While open, another connection holds `table` locked: a statement on it waits, and
    `postgres_cancel_waiting` ends it with an OperationalError, as a database outage would."""
    database = settings.DATABASES["default"]
    locker = psycopg.connect(
        host=database["HOST"],
        port=database.get("PORT") or 5432,
        user=database["USER"],
        dbname=database["NAME"],
    )
    try:
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
    finally:
        locker.rollback()
        locker.close()


def postgres_waiting_on(table: str) -> int | None:
    """The backend whose statement on `table` waits for a lock, if any."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE %s "
            "AND pid <> pg_backend_pid()",
            [f"%{table}%"],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def postgres_cancel(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_cancel_backend(%s)", [pid])
