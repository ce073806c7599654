"""The CRM's pace: each tenant's CRM receives at most LEADFLOW_CRM_RATE_PER_SECOND leads/s,
or LEADFLOW_CRM_THROTTLED_RATE_PER_SECOND while overload control sheds "CRM sync throttled".
A token bucket per tenant in Redis, shared by every pool C thread and host."""

import time

from django.conf import settings

from apps.control.state import shedding_current
from leadflow.outbound import Deadline
from leadflow.ratelimit import bucket_take
from leadflow.redis_keys import crm_pace_key

# A pool C thread naps for its tenant's turn at most this long; a longer wait is handed back
# (the leads are re-enqueued to run when their turn comes) so a throttled tenant holds no thread.
PACE_NAP_MAX_SECONDS = 5.0


def crm_pace_wait(tenant_id: int, leads: int, deadline: Deadline, reserve: float = 0.0) -> float:
    """Take the tenant's CRM's turn for `leads` more, napping for it if it comes soon and at
    least `reserve` seconds before the deadline; 0 when taken, else the seconds still to wait."""
    naps_end = time.monotonic() + PACE_NAP_MAX_SECONDS
    while True:
        throttled = shedding_current().crm_throttled
        rate = settings.CRM_THROTTLED_RATE_PER_SECOND if throttled else settings.CRM_RATE_PER_SECOND
        answer = bucket_take(crm_pace_key(tenant_id), rate, rate, cost=leads)
        if answer.allowed:
            return 0.0
        wait = answer.wait_seconds if answer.wait_seconds >= 0 else PACE_NAP_MAX_SECONDS
        spare = min(deadline.left() - reserve, naps_end - time.monotonic())
        if wait > spare:
            return wait
        # Short naps: the throttle may be lifted meanwhile, and the rate is read again.
        time.sleep(min(max(wait, 0.01), 1.0))
