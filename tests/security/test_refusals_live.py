"""Cheap refusals against the live API (gunicorn, 2 workers): a flood of unknown keys costs no
SQL, counted by PostgreSQL itself (the scans of the API key table, by every backend); the per-IP
limit comes before any lookup; the address behind the proxy is the rightmost X-Forwarded-For
entry, whatever the client forges to its left."""

import os
import secrets
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from django.conf import settings

from apps.tenants.keys import api_key_generate
from tests.live.api import auth

pytestmark = pytest.mark.django_db(transaction=True)

# The live stack's limit for requests without a valid key (tests/conftest.py): 5, then 1/s.
BURST = 5


def _database_url() -> str:
    """The test database, which the live stack runs on."""
    name = settings.DATABASES["default"]["NAME"]
    return urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{name}"))


def key_lookups() -> int:
    """Scans of tenants_apikey that could find a key by its digest: sequential scans of the
    table and scans of its digest index (last-used writes go by primary key: not counted)."""
    with psycopg.connect(_database_url(), autocommit=True) as conn:
        row = conn.execute(
            """
            SELECT t.seq_scan + coalesce(sum(i.idx_scan) FILTER (
                       WHERE i.indexrelname LIKE '%%digest%%'), 0)
            FROM pg_stat_user_tables t
            JOIN pg_stat_user_indexes i ON i.relid = t.relid
            WHERE t.relname = 'tenants_apikey'
            GROUP BY t.seq_scan
            """
        ).fetchone()
    return int(row[0])


def settled_lookups() -> int:
    """The count once every backend has reported its statistics: a backend that flushed less
    than a second before going idle waits PGSTAT_IDLE_INTERVAL (10 s) to flush again, so the
    count is read once it has not moved for longer than that."""
    last, since = key_lookups(), time.monotonic()
    deadline = since + 60
    while time.monotonic() - since < 11:
        assert time.monotonic() < deadline, "the statistics never settled"
        time.sleep(1.0)
        now = key_lookups()
        if now != last:
            last, since = now, time.monotonic()
    return last


def an_address() -> str:
    return f"203.0.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


def garbage_keys(count: int) -> list[str]:
    makers = [
        lambda: uuid.uuid4().hex,
        lambda: "lf_live_" + secrets.token_hex(19),  # the prefix and length, no valid checksum
        lambda: api_key_generate()[:-2] + "zz",
        lambda: "sk_live_" + secrets.token_urlsafe(24),
        lambda: "lf_" + secrets.token_hex(10),
    ]
    return [makers[i % len(makers)]() for i in range(count)]


def test_an_unknown_key_flood_costs_no_sql(live_stack):
    with httpx.Client(base_url=live_stack.api_url, timeout=10) as http:

        def post(key: str | None, address: str) -> int:
            headers = {"X-Forwarded-For": address, **(auth(key) if key else {})}
            return http.post("/api/v1/leads", json={"email": "a@b.io"}, headers=headers).status_code

        # Garbage: no key, bad checksums, other formats, from 300 addresses: no lookup at all.
        before = settled_lookups()
        statuses = [post(key, an_address()) for key in [None, *garbage_keys(299)]]
        assert set(statuses) == {401}
        after = settled_lookups()  # settling takes 11 s: each count is the next one's start
        garbage_lookups, before = after - before, after
        print(f"\n300 garbage keys: {garbage_lookups} lookups")
        assert garbage_lookups == 0

        # One well-formed unknown key, 200 times from 200 addresses: remembered as unknown.
        unknown = api_key_generate()
        assert {post(unknown, an_address()) for _ in range(200)} == {401}
        after = settled_lookups()
        repeat_lookups, before = after - before, after
        print(f"one unknown key x200: {repeat_lookups} lookups")
        assert repeat_lookups <= 4  # each worker once, again if its 5 s memory ran out

        # Fresh well-formed keys from one address: the per-IP limit comes first.
        address = an_address()
        statuses = [post(api_key_generate(), address) for _ in range(100)]
        fresh_lookups = settled_lookups() - before
        print(
            f"100 fresh keys from one address: {fresh_lookups} lookups, {statuses.count(429)} x 429"
        )
        assert statuses[:BURST] == [401] * BURST and statuses.count(429) >= 90
        # Each key the address could try was looked up (the count works), and no more: the
        # burst, and what refilled (1/s) meanwhile.
        assert BURST <= fresh_lookups <= statuses.count(401) <= BURST + 5


def test_a_forged_leftmost_forwarded_for_entry_does_not_change_the_address(api):
    real, other = an_address(), an_address()

    def post(forwarded: str) -> httpx.Response:
        return api.post("/api/v1/leads", json={}, headers={"X-Forwarded-For": forwarded})

    # The client writes what it likes on the left; the proxy appends the address it saw.
    assert [post(f"{an_address()}, {real}").status_code for _ in range(BURST)] == [401] * BURST
    refused = post(f"{an_address()}, 10.9.8.7, {real}")
    assert refused.status_code == 429 and refused.json()["limit"] == "ip_rate"
    # The same forged entries in front of another address: that address's own limit.
    assert post(f"{an_address()}, {other}").status_code == 401
