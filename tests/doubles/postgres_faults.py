"""PostgreSQL made to fail on purpose, without touching the code: a row refused, a table locked,
a waiting statement cancelled (the outage and isolation tests of pools B and C)."""

import contextlib
import uuid

import psycopg
from django.conf import settings
from django.db import connection


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
