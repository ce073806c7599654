"""What the harness knows of the application's insides: its schema and tenants (Django, once, at
the start) and the Redis keys it samples to show where a backlog waits. Everything else goes
through the HTTP API, the processes, and plain SQL on the leads table (chaos/tracking.py)."""

import base64
import contextlib
import json
import os
import re
import subprocess
import sys

from chaos.load import Tenant
from chaos.proc import ROOT

TENANT_NAMES = ("chaos-crm", "chaos-local-1", "chaos-local-2")

# apps/inbox/'s keys, and kombu's: leads waiting in the inboxes by tier, batches the
# dispatcher claimed and pool A has not stored, messages taken by workers and not yet acked.
# They are per shard (leadflow/redis_keys.py: "lf:shard:{<shard>}", the tiers' waiting leads
# among its fields; "lf:inflight:{<shard>}"); the harness's stack runs the default, one shard.
SHARDS = int(os.environ.get("LEADFLOW_REDIS_SHARDS") or 1)
TIERS = ("critical", "normal", "low")
UNACKED_INDEX_KEY = "unacked_index"
QUEUES = [f"{pool}.{tier}" for pool in "abc" for tier in ("critical", "normal", "low")]


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


def tenants_create(env: dict[str, str], crm_url: str) -> list[Tenant]:
    """Three tenants with a key each; the first delivers to the CRM double, the others to the
    local adapter (so one tenant's CRM trouble can be told from the others' progress)."""
    # Settings as the platform's (the SSRF guard judges the CRM double's URL at save time).
    os.environ.update(
        {key: value for key, value in env.items() if key.startswith(("LEADFLOW_", "DJANGO_"))},
        DATABASE_URL=env["DATABASE_URL"],
        REDIS_URL=env["REDIS_URL"],
        DJANGO_SETTINGS_MODULE="leadflow.settings",
    )
    import django

    django.setup()
    from django.db import connections

    from apps.tenants.services import tenant_create

    tenants = []
    for name in TENANT_NAMES:
        path = f"/crm/{name}" if name == TENANT_NAMES[0] else None
        fields = {"crm_webhook_url": f"{crm_url}{path}"} if path else {}
        _, key = tenant_create(name, **fields)
        tenants.append(Tenant(name, key, path))
    connections.close_all()
    return tenants


def redis_gauges(client) -> dict[str, int]:
    """Where the backlog waits: leads in the inboxes, in-flight batches, queued and unacked
    messages per pool."""
    pipe = client.pipeline(transaction=False)
    for shard in range(SHARDS):
        pipe.hmget(f"lf:shard:{{{shard}}}", TIERS)
        pipe.zcard(f"lf:inflight:{{{shard}}}")
    pipe.zcard(UNACKED_INDEX_KEY)
    for name in QUEUES:
        pipe.llen(name)
    replies = pipe.execute()
    per_shard, (unacked, *lengths) = replies[: 2 * SHARDS], replies[2 * SHARDS :]
    gauges = {
        "inbox_leads": sum(int(v or 0) for waiting in per_shard[::2] for v in waiting),
        "inflight_batches": sum(per_shard[1::2]),
        "unacked_messages": unacked,
    }
    for pool in "abc":
        gauges[f"queued_{pool}"] = sum(
            n for name, n in zip(QUEUES, lengths, strict=True) if name.startswith(pool)
        )
    return gauges


# Keys that name or point to a lead without holding it for work: the trace id's status key,
# dedup digests (they hold the original's trace id).
_NOT_HOLDING = ("lf:trace:", "lf:dedup:")


def trace_ids_in_redis(client, trace_ids: list[str]) -> dict[str, str]:
    """The trace ids still waiting in Redis for work (an inbox, an in-flight batch, a queued or
    unacked message): accepted and not stored, but not lost; each with the key holding it, ids
    made "*". Only values are searched: some keys carry a trace id in their name."""
    left = set(trace_ids)
    found: dict[str, str] = {}
    for key in client.scan_iter(count=1000):
        if not left:
            break
        name = key.decode(errors="replace")
        if name.startswith(_NOT_HOLDING):
            continue
        blob = _values(client, key)
        blob += b"\n" + _message_bodies(blob)
        for trace_id in [t for t in left if t.encode() in blob]:
            found[trace_id] = _key_pattern(name)
            left.discard(trace_id)
    return found


def _values(client, key: bytes) -> bytes:
    kind = client.type(key)
    if kind == b"list":
        values = client.lrange(key, 0, -1)
    elif kind == b"zset":
        values = client.zrange(key, 0, -1)
    elif kind == b"hash":
        values = [part for pair in client.hgetall(key).items() for part in pair]
    elif kind == b"set":
        values = list(client.smembers(key))
    elif kind == b"string":
        values = [client.get(key) or b""]
    else:
        values = []
    return b"\n".join(values)


def _key_pattern(key: str) -> str:
    return re.sub(r"[0-9a-f]{8}-?[0-9a-f-]{27,}|[0-9a-f]{32}|\b\d+\b", "*", key)


def _message_bodies(blob: bytes) -> bytes:
    """Celery messages keep their body in base64 inside their JSON (kombu): those decoded."""
    if b"base64" not in blob:
        return b""
    found = []
    stack: list = []
    for line in blob.split(b"\n"):
        if line.startswith((b"{", b"[")):
            with contextlib.suppress(ValueError):
                stack.append(json.loads(line))
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack += item
        elif isinstance(item, dict):
            properties = item.get("properties")
            encoding = properties.get("body_encoding") if isinstance(properties, dict) else None
            if encoding == "base64" and isinstance(item.get("body"), str):
                found.append(base64.b64decode(item["body"]))
            stack += list(item.values())
    return b"\n".join(found)
