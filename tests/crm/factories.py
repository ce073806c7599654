"""Pool C's test data: leads written straight to PostgreSQL as pool A or B leaves them."""

import contextlib
import uuid

from django.db import connection
from django.utils import timezone

from apps.leads.models import Lead

SECRET = "whsec-test-0123456789"


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
