"""Reads of the intake's Redis state, for operators (admin, metrics): no effect on admission."""

from dataclasses import dataclass

from leadflow import redis_keys
from leadflow.redis_conn import get_inbox_redis


@dataclass(frozen=True, slots=True)
class AdmissionState:
    critical_credits: float  # what the bucket holds now, refill included
    budget_used: int  # leads accepted in the current clock hour


def admission_state(tenant) -> AdmissionState:
    client = get_inbox_redis()
    seconds, micros = client.time()  # apart: a Redis Cluster's pipeline cannot carry TIME
    # One hash holds both (redis_keys.tenant_state_key).
    tokens, at, hour, used = client.hmget(
        redis_keys.tenant_state_key(tenant.id), ["tokens", "at", "hour", "used"]
    )
    now = seconds + micros / 1_000_000
    credits = float(tenant.critical_capacity)
    if tokens is not None:
        refilled = float(tokens) + (now - float(at)) * tenant.critical_refill_per_second
        credits = min(float(tenant.critical_capacity), refilled)
    budget_used = int(used) if hour is not None and int(hour) == int(now // 3600) else 0
    return AdmissionState(critical_credits=credits, budget_used=budget_used)
