"""Admission: the intake's single Redis round trip (apps/intake/lua/admit.lua).

Dedup, inbox push and the numbers for an honest answer (position, drain rate, mode)
are decided in one atomic script, so the hot path costs one round trip and no SQL.
"""

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from django.conf import settings

from apps.intake import inbox
from leadflow.redis_conn import get_redis, lua_script
from workers.queues import TIERS

_SCRIPT_PATH = Path(__file__).parent / "lua" / "admit.lua"
_TIER_INDEX = {tier: index for index, tier in enumerate(TIERS, start=1)}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A validated lead about to be admitted."""

    dedup_digest: str  # SHA-256 of the Idempotency-Key, or of the canonical body
    tier: str
    fields: dict


@dataclass(frozen=True, slots=True)
class Admission:
    trace_id: str
    duplicate: bool
    tier: str | None
    position: int
    estimated_completion: datetime | None


def dedup_digest_for_body(body: object) -> str:
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def dedup_digest_for_key(idempotency_key: str) -> str:
    return hashlib.sha256(b"idempotency-key:" + idempotency_key.encode()).hexdigest()


def admit(tenant_id: int, candidates: list[Candidate]) -> tuple[str, list[Admission]]:
    """Admit the tenant's leads in order; returns the platform mode and one Admission per lead."""
    received_at = time.time()
    keys = [inbox.inbox_key(tier, tenant_id) for tier in TIERS]
    keys += [inbox.active_tenants_key(tier) for tier in TIERS]
    keys += [inbox.BACKLOG_KEY, inbox.DRAIN_KEY, inbox.MODE_KEY]
    args: list = [tenant_id, settings.DEDUP_TTL_SECONDS, len(candidates)]
    for candidate in candidates:
        trace_id = str(uuid.uuid4())
        tier_index = _TIER_INDEX[candidate.tier]
        keys += [inbox.dedup_key(tenant_id, candidate.dedup_digest), inbox.trace_key(trace_id)]
        entry = {
            "trace_id": trace_id,
            "tenant_id": tenant_id,
            "tier": candidate.tier,
            "received_at": received_at,
            **candidate.fields,
        }
        args += [
            trace_id,
            tier_index,
            f"{tenant_id}|{tier_index}|{received_at}",
            orjson.dumps(entry),
        ]

    raw_mode, raw_drain, results = lua_script(_SCRIPT_PATH)(keys=keys, args=args)
    drain = [float(rate) if rate else settings.DRAIN_RATE_DEFAULT for rate in raw_drain]
    now = datetime.fromtimestamp(received_at, tz=UTC)
    admissions = []
    for outcome, trace_id, tier_index, position in results:
        tier = TIERS[tier_index - 1] if tier_index else None
        eta = None
        if outcome == 1:
            # Leads of this tier and the tiers before it drain at about the slowest of their rates.
            rate = max(min(drain[:tier_index]), 0.001)
            eta = now + timedelta(seconds=position / rate)
        admissions.append(
            Admission(
                trace_id=trace_id.decode(),
                duplicate=outcome == 2,
                tier=tier,
                position=position,
                estimated_completion=eta,
            )
        )
    return raw_mode.decode(), admissions


def queued_lead(trace_id: str) -> tuple[int, str, float] | None:
    """(tenant id, tier, received_at) of a lead admitted in the last 24 h, from Redis."""
    record = get_redis().get(inbox.trace_key(trace_id))
    if record is None:
        return None
    tenant_id, tier_index, received_at = record.decode().split("|")
    return int(tenant_id), TIERS[int(tier_index) - 1], float(received_at)
