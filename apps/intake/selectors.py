"""Reads of the intake's Redis state, for operators (admin, metrics): no effect on admission."""

from dataclasses import dataclass

from leadflow import redis_keys
from leadflow.redis_conn import get_redis


@dataclass(frozen=True, slots=True)
class AdmissionState:
    critical_credits: float  # what the bucket holds now, refill included
    budget_used: int  # leads accepted in the current clock hour


def admission_state(tenant) -> AdmissionState:
    pipe = get_redis().pipeline(transaction=False)
    pipe.time()
    pipe.hmget(redis_keys.credits_key(tenant.id), ["tokens", "at"])
    pipe.hmget(redis_keys.budget_key(tenant.id), ["hour", "used"])
    (seconds, micros), (tokens, at), (hour, used) = pipe.execute()
    now = seconds + micros / 1_000_000
    credits = float(tenant.critical_capacity)
    if tokens is not None:
        refilled = float(tokens) + (now - float(at)) * tenant.critical_refill_per_second
        credits = min(float(tenant.critical_capacity), refilled)
    budget_used = int(used) if hour is not None and int(hour) == int(now // 3600) else 0
    return AdmissionState(critical_credits=credits, budget_used=budget_used)
