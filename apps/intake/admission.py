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
from leadflow.redis_conn import get_inbox_redis, lua_script, script_run_hot

_SCRIPT_PATH = Path(__file__).parent / "lua" / "admit.lua"
_TIER_INDEX = {tier: index for index, tier in enumerate(TIERS, start=1)}
_DUPLICATE, _REFUSED = "2", "3"  # admit.lua's outcomes ("1": accepted)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A validated lead about to be admitted (its dedup identity from `dedup_identity`)."""

    dedup_digest: str  # SHA-256 of the Idempotency-Key, of key + lead (batch), or of the lead
    tier: str
    fields: dict
    # Sent with an Idempotency-Key: what a repeat must match to be answered with the original
    # answer (a replay) rather than 422; empty without a key (a repeat is a duplicate).
    fingerprint: str = ""


# What a refusal says, for the client and the logs. Budget and backpressure refuse one lead;
# the rate limits refuse the whole request.
LIMIT_DETAILS = {
    "ip_rate": "too many requests from this IP address",
    "tenant_rate": "your tenant's request rate limit is reached",
    "hourly_budget": "your tenant's hourly lead budget is spent",
    "backpressure": "this tier's backlog is over its bound; come back when there is room",
    "erasure_rate": "too many erasures from your tenant (DELETE /api/v1/leads)",
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
    """One lead's answer: accepted, a duplicate of an accepted lead, refused by a limit, or for
    a lead sent with an Idempotency-Key, its original answer replayed or the key found reused."""

    trace_id: str | None
    duplicate: bool
    tier: str | None
    demoted: bool = False
    position: int = 0
    estimated_completion: datetime | None = None
    retry_after: int | None = None  # when accepted under overload: when to poll the status
    refusal: Refusal | None = None
    # Accepted by an earlier request with the same Idempotency-Key and lead: the original
    # answer, rebuilt, and the mode it was admitted in.
    replayed: bool = False
    mode: str | None = None
    key_reused: bool = False  # the Idempotency-Key was sent before with another lead: 422

    @property
    def accepted(self) -> bool:
        """Accepted by this request (not a repeat of an earlier one)."""
        return not (self.duplicate or self.replayed or self.key_reused) and self.refusal is None


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


def dedup_digest_for_batch_lead(idempotency_key: str, canonical: bytes) -> str:
    """A batch's lead sent with an Idempotency-Key: the key and the lead itself, never its
    index (a retry that drops or reorders leads must not shift another lead's identity), under
    a prefix of its own (never a single lead's key digest). A key is printable ASCII, so the
    newline ends it unambiguously."""
    return hashlib.sha256(
        b"idempotency-batch:" + idempotency_key.encode() + b"\n" + canonical
    ).hexdigest()


# A batch lead's fingerprint: its dedup digest holds the lead already, so a match of the digest
# is a match of the lead.
BATCH_FINGERPRINT = "batch"


def dedup_identity(raw: object, idempotency_key: str | None, in_batch: bool) -> tuple[str, str]:
    """(dedup digest, fingerprint) of a lead as sent (README, Idempotency): without a key, its
    canonical JSON is its identity; with one, a single lead is the key, and its fingerprint the
    lead's digest (the same key with another lead is 422); a batch's lead is key + lead."""
    canonical = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    if idempotency_key is None:
        return hashlib.sha256(canonical).hexdigest(), ""
    if in_batch:
        return dedup_digest_for_batch_lead(idempotency_key, canonical), BATCH_FINGERPRINT
    # 128 bits: it is kept with every keyed lead for 24 h, and it tells a client's mistake
    # apart, it does not resist an attacker (a tenant could only confuse its own answers).
    return dedup_digest_for_key(idempotency_key), hashlib.sha256(canonical).hexdigest()[:32]


def trace_ids_new(count: int, shard: int = 0) -> list[str]:
    """`count` random (version 4) UUIDs as text, as str(uuid.uuid4()) gives them, from one read
    of the OS's randomness: for a batch of 500, a third of what uuid4() one by one costs.

    With more than one Redis shard, each id's last 16 bits name `shard` (redis_keys.trace_shard:
    a trace id alone finds its trace key, which must be in its tenant's shard); 106 bits stay
    random."""
    shards = redis_keys.SHARDS
    randomness = os.urandom(16 * count)
    trace_ids = []
    for start in range(0, 16 * count, 16):
        raw = bytearray(randomness[start : start + 16])
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        if shards > 1:
            tail = int.from_bytes(raw[14:16], "big")
            tail = tail - tail % shards + shard
            if tail > 0xFFFF:
                tail -= shards
            raw[14:16] = tail.to_bytes(2, "big")
        text = raw.hex()
        trace_ids.append(f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}")
    return trace_ids


@functools.lru_cache(maxsize=4096)
def _tenant_keys(tenant_id: int) -> tuple[str, ...]:
    """The script's fixed keys for a tenant but the per-IP bucket (KEYS[1..8, 10])."""
    shard = redis_keys.shard_of(tenant_id)
    return (
        *(redis_keys.inbox_key(tier, tenant_id) for tier in TIERS),
        *(redis_keys.active_tenants_key(tier, shard) for tier in TIERS),
        redis_keys.shard_key(shard),
        redis_keys.request_window_key(tenant_id),
        redis_keys.tenant_state_key(tenant_id),
    )


def admit(tenant: TenantAuth, client_ip: str, candidates: list[Candidate]) -> AdmissionResult:
    """Admit the tenant's leads in order, in one Redis round trip (apps/intake/lua/admit.lua)."""
    # Long on purpose: KEYS and ARGV in the order admit.lua reads them, built in one place so
    # the script and its caller stay in step.
    tenant_id = tenant.tenant_id
    received_at = time.time()
    fixed = _tenant_keys(tenant_id)
    keys = [*fixed[:8], redis_keys.ip_bucket_key(tenant_id, client_ip), fixed[8]]
    trace_ids = trace_ids_new(len(candidates), redis_keys.shard_of(tenant_id))
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
        args += [
            trace_id,
            _TIER_INDEX[candidate.tier],
            inbox.entry_open(fields),
            candidate.fingerprint,
        ]

    script = lua_script(_SCRIPT_PATH, TOKEN_BUCKET_LUA, inbox=True)
    raw_mode, refused, wait, raw_drain, results = script_run_hot(script, keys, args)
    mode = raw_mode.decode()
    if refused:
        limit = refused.decode()
        return AdmissionResult(mode, Refusal(limit, retry_after_seconds(float(wait), limit)), [])
    drain = float(raw_drain)
    received = datetime.fromtimestamp(received_at, tz=UTC)
    admissions = []
    answered: set[str] | None = None  # trace ids this request answered with, from its first repeat
    for trace_id, candidate, raw in zip(trace_ids, candidates, results, strict=True):
        outcome, rest = raw.decode().split("|", 1)
        if outcome == _DUPLICATE:
            answered = answered or set(trace_ids)
            repeat = _repeat(rest.split("|"), candidate, answered)
            if repeat.replayed:
                answered.add(repeat.trace_id)  # the lead sent again in this request: a duplicate
            admissions.append(repeat)
            continue
        tier_index, rest = rest.split("|", 1)
        tier = TIERS[int(tier_index) - 1]
        if outcome == _REFUSED:
            demoted, limit, lead_wait = rest.split("|")
            refusal = Refusal(limit, retry_after_seconds(float(lead_wait), limit))
            admissions.append(Admission(None, False, tier, demoted == "1", refusal=refusal))
        else:
            demoted, position = rest.split("|")
            admissions.append(
                _queued(trace_id, tier, demoted == "1", int(position), mode, drain, received)
            )
    return AdmissionResult(mode, None, admissions)


def _queued(
    trace_id: str,
    tier: str,
    demoted: bool,
    position: int,
    mode: str,
    drain: float,
    received: datetime,
    replayed: bool = False,
) -> Admission:
    """An accepted lead's answer, from what admit.lua decided and keeps in its dedup value: the
    same numbers give the same answer, to the byte, when it is replayed."""
    wait_seconds = position / drain
    return Admission(
        trace_id=trace_id,
        duplicate=False,
        tier=tier,
        demoted=demoted,
        position=position,
        estimated_completion=received + timedelta(seconds=wait_seconds),
        retry_after=(
            None if mode == "normal" else retry_after_seconds(wait_seconds, "backpressure")
        ),
        replayed=replayed,
        mode=mode,
    )


def _repeat(original: list[str], candidate: Candidate, answered: set[str]) -> Admission:
    """A lead whose dedup key was taken: `original` is the key's value (admit.lua), "<trace
    id>|<tier index>", and for a lead sent with an Idempotency-Key "|<fingerprint>|<demoted>|
    <position>|<mode>|<drain rate>|<received_at>" too: what its answer was made of."""
    trace_id, tier = original[0], TIERS[int(original[1]) - 1]
    # A value of two fields: a lead sent without a key, or a keyed one admitted before values
    # kept the answer. A lead this request answered already (a batch sending one lead twice)
    # is a duplicate the second time, as on the first try.
    if len(original) == 2 or not candidate.fingerprint or trace_id in answered:
        return Admission(trace_id=trace_id, duplicate=True, tier=tier)
    fingerprint, demoted, position, mode, drain, received_at = original[2:]
    if fingerprint != candidate.fingerprint:
        return Admission(None, False, candidate.tier, key_reused=True)
    return _queued(
        trace_id,
        tier,
        demoted == "1",
        int(position),
        mode,
        float(drain),
        # received_at as admit() sent it (redis-py writes a float's repr: exact both ways).
        datetime.fromtimestamp(float(received_at), tz=UTC),
        replayed=True,
    )


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
    before it that the dispatcher has taken since, and never more than what waits there now
    (with more than one shard, the claims of its own shard, and the other shards' waiting
    leads as of the controller's last tick).
    """
    # Admission gives a lead a trace id in its tenant's shard: the key and its shard's
    # counters are read together (one slot on a Redis Cluster).
    shard = redis_keys.trace_shard(trace_id)
    claimed_fields = [f"claimed:{tier}" for tier in TIERS]
    pipe = get_inbox_redis().pipeline(transaction=False)
    pipe.get(redis_keys.trace_key(trace_id))
    others_fields = [f"others:{tier}" for tier in TIERS]
    pipe.hmget(redis_keys.shard_key(shard), [*claimed_fields, *TIERS, *others_fields, "drain"])
    record, counters = pipe.execute()
    claimed, drain = counters[:3], counters[9]
    waiting = [
        int(mine or 0) + int(other or 0)
        for mine, other in zip(counters[3:6], counters[6:9], strict=True)
    ]
    if record is None:
        return None
    tenant_id, tier_index, received_at, position, claimed_at_admit = record.decode().split("|")
    ahead = int(tier_index)
    moved = sum(int(count or 0) for count in claimed[:ahead]) - int(claimed_at_admit)
    waiting_ahead = sum(waiting[:ahead])
    position_now = max(1, min(int(position) - moved, waiting_ahead))
    rate = max(float(drain or settings.DRAIN_RATE_DEFAULT), 0.001)
    return QueuedLead(
        tenant_id=int(tenant_id),
        tier=TIERS[ahead - 1],
        received_at=datetime.fromtimestamp(float(received_at), tz=UTC),
        position=position_now,
        estimated_completion=datetime.now(tz=UTC) + timedelta(seconds=position_now / rate),
    )
