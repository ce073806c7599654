"""The CRM's pace: each tenant's CRM receives at most LEADFLOW_CRM_RATE_PER_SECOND leads/s,
or LEADFLOW_CRM_THROTTLED_RATE_PER_SECOND while overload control sheds "CRM sync throttled".
A token bucket per tenant in Redis, shared by every pool C thread and host."""

import time

from django.conf import settings

from apps.control.state import shedding_current
from leadflow.ratelimit import bucket_take


def crm_pace_key(tenant_id: int) -> str:
    return f"lf:crm:pace:{tenant_id}"


def crm_pace_wait(tenant_id: int, leads: int) -> None:
    """Block until the tenant's CRM may take `leads` more."""
    while True:
        throttled = shedding_current().crm_throttled
        rate = settings.CRM_THROTTLED_RATE_PER_SECOND if throttled else settings.CRM_RATE_PER_SECOND
        answer = bucket_take(crm_pace_key(tenant_id), rate, rate, cost=leads)
        if answer.allowed:
            return
        # Short naps: the throttle may be lifted meanwhile, and the rate is read again.
        time.sleep(min(max(answer.wait_seconds, 0.01), 1.0))
