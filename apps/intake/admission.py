"""Admission: the intake's single Redis round trip (apps/intake/lua/admit.lua).

Rate limits, dedup, the hourly budget, critical credits, backpressure, the inbox push and the
numbers for an honest answer (position, drain rate, mode) are decided in one atomic script,
so the hot path costs one round trip and no SQL.
"""

import functools
import hashlib
import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from django.conf import settings

from apps import inbox
from apps.tenants.cache import TenantAuth
from leadflow import redis_keys
from leadflow.queues import TIERS
from leadflow.ratelimit import TOKEN_BUCKET_LUA
from leadflow.redis_conn import get_redis, lua_script, script_run_hot

_SCRIPT_PATH = Path(__file__).parent / "lua" / "admit.lua"
_TIER_INDEX = {tier: index for index, tier in enumerate(TIERS, start=1)}
_DUPLICATE, _REFUSED = "2", "3"  # admit.lua's outcomes ("1": accepted)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A validated lead about to be admitted."""

    dedup_digest: str  # SHA-256 of the Idempotency-Key, or of the canonical body
    tier: str
    fields: dict


# What a refusal says, for the client and the logs. Budget and backpressure refuse one lead;
# the rate limits refuse the whole request.
LIMIT_DETAILS = {
    "ip_rate": "too many requests from this IP address",
    "tenant_rate": "your tenant's request rate limit is reached",
    "hourly_budget": "your tenant's hourly lead budget is spent",
    "backpressure": "this tier's backlog is over its bound; come back when there is room",
}


@dataclass(frozen=True, slots=True)
class Refusal:
    limit: str  # a key of LIMIT_DETAILS
    retry_after: int  # whole seconds, as the Retry-After header says them

    @property
    def detail(self) -> str:
        return LIMIT_DETAILS[self.limit]


@dataclass(frozen=True, slots=True)
class Admission:
    """One lead's answer: accepted, a duplicate of an accepted lead, or refused by a limit."""

    trace_id: str | None
    duplicate: bool
    tier: str | None
    demoted: bool = False
    position: int = 0
    estimated_completion: datetime | None = None
    retry_after: int | None = None  # when accepted under overload: when to poll the status
    refusal: Refusal | None = None

    @property
    def accepted(self) -> bool:
        return not self.duplicate and self.refusal is None


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    mode: str
    refusal: Refusal | None  # the whole request was refused (rate limits)
    admissions: list[Admission]


def _backlog_bounds() -> tuple[int, int, int]:
    return tuple(settings.BACKPRESSURE_BACKLOG[tier] for tier in TIERS)


def retry_after_seconds(wait: float, limit: str) -> int:
    """A wait in seconds as a Retry-After: whole seconds, at least 1; backpressure's at most
    RETRY_AFTER_MAX_SECONDS (an estimate from the drain rate grows less reliable with time)."""
    seconds = max(1, math.ceil(wait))
    if limit == "backpressure":
        seconds = min(seconds, settings.RETRY_AFTER_MAX_SECONDS)
    return seconds


def dedup_digest_for_body(body: object) -> str:
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def dedup_digest_for_key(idempotency_key: str) -> str:
    return hashlib.sha256(b"idempotency-key:" + idempotency_key.encode()).hexdigest()


def trace_ids_new(count: int) -> list[str]:
    """`count` random (version 4) UUIDs as text, as str(uuid.uuid4()) gives them, from one read
    of the OS's randomness: for a batch of 500, a third of what uuid4() one by one costs."""
    randomness = os.urandom(16 * count)
    trace_ids = []
    for start in range(0, 16 * count, 16):
        raw = bytearray(randomness[start : start + 16])
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        text = raw.hex()
        trace_ids.append(f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}")
    return trace_ids


@functools.lru_cache(maxsize=4096)
def _tenant_keys(tenant_id: int) -> tuple[str, ...]:
    """The script's fixed keys for a tenant but the per-IP bucket (KEYS[1..11, 13..15])."""
    return (
        *(redis_keys.inbox_key(tier, tenant_id) for tier in TIERS),
        *(redis_keys.active_tenants_key(tier) for tier in TIERS),
        redis_keys.BACKLOG_KEY,
        redis_keys.DRAIN_KEY,
        redis_keys.MODE_KEY,
        redis_keys.CLOSED_KEY,
        redis_keys.request_window_key(tenant_id),
        redis_keys.credits_key(tenant_id),
        redis_keys.budget_key(tenant_id),
        redis_keys.CLAIMED_KEY,
    )


def admit(tenant: TenantAuth, client_ip: str, candidates: list[Candidate]) -> AdmissionResult:
    """Admit the tenant's leads in order, in one Redis round trip (apps/intake/lua/admit.lua)."""
    # Long on purpose: KEYS and ARGV in the order admit.lua reads them, built in one place so
    # the script and its caller stay in step.
    tenant_id = tenant.tenant_id
    received_at = time.time()
    fixed = _tenant_keys(tenant_id)
    keys = [*fixed[:11], redis_keys.ip_bucket_key(tenant_id, client_ip), *fixed[11:]]
    trace_ids = trace_ids_new(len(candidates))
    args: list = [
        tenant_id,
        # A lead's dedup and trace keys never outlive its tenant's retention (apps/retention).
        min(settings.DEDUP_TTL_SECONDS, tenant.retention_hours * 3600),
        len(candidates),
        trace_ids[0],  # the request's member in the tenant's window: unique
        tenant.rate_limit_per_second,
        tenant.per_ip_rate_limit_per_second or 0,
        tenant.critical_capacity,
        tenant.critical_refill_per_second,
        tenant.hourly_budget,
        *_backlog_bounds(),
        settings.DRAIN_RATE_DEFAULT,
        received_at,
    ]
    for trace_id, candidate in zip(trace_ids, candidates, strict=True):
        keys += [
            redis_keys.dedup_key(tenant_id, candidate.dedup_digest),
            redis_keys.trace_key(trace_id),
        ]
        fields = {
            "trace_id": trace_id,
            "tenant_id": tenant_id,
            "received_at": received_at,
            **candidate.fields,
        }
        args += [trace_id, _TIER_INDEX[candidate.tier], inbox.entry_open(fields)]
    keys.append(redis_keys.receipt_key(tenant_id))  # always the script's last key

    script = lua_script(_SCRIPT_PATH, TOKEN_BUCKET_LUA)
    raw_mode, refused, wait, raw_drain, results = script_run_hot(script, keys, args)
    mode = raw_mode.decode()
    if refused:
        limit = refused.decode()
        return AdmissionResult(mode, Refusal(limit, retry_after_seconds(float(wait), limit)), [])
    drain = float(raw_drain)
    now = datetime.fromtimestamp(received_at, tz=UTC)
    admissions = []
    for trace_id, raw in zip(trace_ids, results, strict=True):
        outcome, tier_index, rest = raw.decode().split("|", 2)
        tier = TIERS[int(tier_index) - 1]
        if outcome == _DUPLICATE:
            admissions.append(Admission(trace_id=rest, duplicate=True, tier=tier))
        elif outcome == _REFUSED:
            demoted, limit, lead_wait = rest.split("|")
            refusal = Refusal(limit, retry_after_seconds(float(lead_wait), limit))
            admissions.append(Admission(None, False, tier, demoted == "1", refusal=refusal))
        else:
            demoted, position = rest.split("|")
            position = int(position)
            wait_seconds = position / drain
            admissions.append(
                Admission(
                    trace_id=trace_id,
                    duplicate=False,
                    tier=tier,
                    demoted=demoted == "1",
                    position=position,
                    estimated_completion=now + timedelta(seconds=wait_seconds),
                    retry_after=(
                        None
                        if mode == "normal"
                        else retry_after_seconds(wait_seconds, "backpressure")
                    ),
                )
            )
    return AdmissionResult(mode, None, admissions)


@dataclass(frozen=True, slots=True)
class QueuedLead:
    tenant_id: int
    tier: str
    received_at: datetime
    position: int
    estimated_completion: datetime


def queued_lead(trace_id: str) -> QueuedLead | None:
    """A lead admitted in the last 24 h and its place in the backlog now, from Redis.

    The position is the one it was admitted with, less the leads of its tier and the tiers
    before it that the dispatcher has taken since, and never more than what waits there now.
    """
    pipe = get_redis().pipeline(transaction=False)
    pipe.get(redis_keys.trace_key(trace_id))
    pipe.hmget(redis_keys.CLAIMED_KEY, list(TIERS))
    pipe.hmget(redis_keys.BACKLOG_KEY, list(TIERS))
    pipe.hget(redis_keys.DRAIN_KEY, "total")
    record, claimed, waiting, drain = pipe.execute()
    if record is None:
        return None
    tenant_id, tier_index, received_at, position, claimed_at_admit = record.decode().split("|")
    ahead = int(tier_index)
    moved = sum(int(count or 0) for count in claimed[:ahead]) - int(claimed_at_admit)
    waiting_ahead = sum(int(count or 0) for count in waiting[:ahead])
    position_now = max(1, min(int(position) - moved, waiting_ahead))
    rate = max(float(drain or settings.DRAIN_RATE_DEFAULT), 0.001)
    return QueuedLead(
        tenant_id=int(tenant_id),
        tier=TIERS[ahead - 1],
        received_at=datetime.fromtimestamp(float(received_at), tz=UTC),
        position=position_now,
        estimated_completion=datetime.now(tz=UTC) + timedelta(seconds=position_now / rate),
    )
