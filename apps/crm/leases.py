"""Delivery leases: a lead is delivered by one pool C run at a time, so a message handed out
again (its visibility timeout passed while the first run still worked, the stalled-lead sweeper,
a replay) never sends the CRM leads it is receiving already.

Before delivering a tenant's group, a run leases its leads (SET NX PX per lead, one Lua call for
the group) and then re-reads which are still unsynced. Leads another run holds are looked at
again once that lease ends: synced by then, nothing is left to do; if the run died, they are
delivered. A lease is short (one CRM call's deadline plus a margin), so a killed run's leads are
free again within seconds; the run keeps it just before each CRM call (extended if still its
own; a lead whose lease lapsed meanwhile is not sent by this run), so a call always ends, by its
deadline, inside the lease.
Once the CRM accepted a delivery, its leads stay marked "sent" (with what the CRM answered)
until they are recorded in PostgreSQL: a run that could not record them (PostgreSQL down)
leaves the marks, and the next run records them without sending them again.
A tenant's keys share a hash tag, so each call stays in one slot of a Redis Cluster.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from leadflow.redis_conn import get_redis, lua_script
from leadflow.redis_keys import crm_lease_key, crm_reply_key, crm_sent_key

LUA_DIR = Path(__file__).parent / "lua"
# A lease outlives the CRM call it covers by this much (the call has a total deadline).
LEASE_MARGIN_SECONDS = 5.0
# Sent marks wait this long for the run that records them (PostgreSQL back within the hour).
SENT_MARK_SECONDS = 3600


@dataclass
class Lease:
    tenant_id: int
    token: str
    to_deliver: list[str] = field(default_factory=list)
    sent: dict[str, str] = field(default_factory=dict)  # trace id -> delivery id, unrecorded
    held: dict[str, float] = field(default_factory=dict)  # another run's: seconds it has left


def delivery_lease_seconds() -> float:
    return settings.CRM_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS


def delivery_lease_take(
    tenant_id: int, trace_ids: list[str], token: str, seconds: float | None = None
) -> Lease:
    """Lease the tenant's leads under `token`, for one CRM call's length unless `seconds`."""
    lease = Lease(tenant_id, token)
    if not trace_ids:
        return lease
    keys = [crm_lease_key(tenant_id, t) for t in trace_ids] + [
        crm_sent_key(tenant_id, t) for t in trace_ids
    ]
    milliseconds = int((seconds or delivery_lease_seconds()) * 1000)
    answers = lua_script(LUA_DIR / "delivery_lease_take.lua")(keys=keys, args=[token, milliseconds])
    for trace_id, answer in zip(trace_ids, answers, strict=True):
        if isinstance(answer, int):
            lease.held[trace_id] = answer / 1000
        elif answer == b"":
            lease.to_deliver.append(trace_id)
        else:
            lease.sent[trace_id] = answer.decode()
    return lease


def delivery_lease_keep(lease: Lease, trace_ids: list[str]) -> list[str]:
    """Just before a CRM call: the leads whose lease is still this run's, now extended by one
    call's length; the others lapsed (this process stalled) and are left to whoever holds them."""
    if not trace_ids:
        return []
    held = lua_script(LUA_DIR / "delivery_lease_keep.lua")(
        keys=[crm_lease_key(lease.tenant_id, t) for t in trace_ids],
        args=[lease.token, int(delivery_lease_seconds() * 1000)],
    )
    return [trace_id for trace_id, kept in zip(trace_ids, held, strict=True) if kept]


def delivery_lease_release(lease: Lease, recorded: list[str]) -> None:
    """Give the leases back and forget the sent marks of the leads now recorded."""
    leased = lease.to_deliver + list(lease.sent)
    if not leased:
        return
    with get_redis().pipeline(transaction=False) as pipe:
        lua_script(LUA_DIR / "delivery_lease_release.lua")(
            keys=[crm_lease_key(lease.tenant_id, t) for t in leased],
            args=[lease.token],
            client=pipe,
        )
        if recorded:
            pipe.delete(*[crm_sent_key(lease.tenant_id, t) for t in recorded])
        pipe.execute()


def deliveries_mark_sent(tenant_id: int, trace_ids: list[str], delivery: str, stored: dict) -> None:
    """The CRM accepted `delivery` of these leads; `stored` is what their rows will keep."""
    with get_redis().pipeline(transaction=False) as pipe:
        pipe.set(crm_reply_key(tenant_id, delivery), json.dumps(stored), ex=SENT_MARK_SECONDS)
        for trace_id in trace_ids:
            pipe.set(crm_sent_key(tenant_id, trace_id), delivery, ex=SENT_MARK_SECONDS)
        pipe.execute()


def deliveries_sent_replies(tenant_id: int, deliveries: set[str]) -> dict[str, dict]:
    """What the CRM answered to these earlier deliveries (a reply gone reads as a stub)."""
    ordered = sorted(deliveries)
    raw = get_redis().mget([crm_reply_key(tenant_id, d) for d in ordered]) if ordered else []
    return {
        delivery: json.loads(value) if value else {"delivery_id": delivery}
        for delivery, value in zip(ordered, raw, strict=True)
    }
