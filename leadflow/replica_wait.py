"""Admission that waits for a replica (LEADFLOW_ADMIT_WAIT_REPLICAS; README "Outages").

With a Redis replica (Sentinel), `appendfsync everysec` on the primary is not the only copy of
a lead: the intake can send `WAIT <replicas> <timeout ms>` right behind its admission script, on
the same connection and in the same round trip (pipelined), so the 202 goes out once that many
replicas have the lead, or the timeout passed. WAIT never fails the write: on a timeout the lead
is admitted all the same (the primary has it, with its AOF), the shortfall is counted
(`leadflow_admit_replica_shortfalls_total`) and logged, and the client gets its 202. A 503
there would tell the client "nothing was accepted", which would be false.

Off (0) by default. Keep LEADFLOW_ADMIT_WAIT_TIMEOUT_MS well under the API's Redis socket
timeout: WAIT holds the reply that long when a replica is behind or gone.
"""

import logging
import time

import redis
from django.conf import settings
from prometheus_client import Counter

log = logging.getLogger(__name__)

# Labelled (by the number of replicas asked for), so no value exists before the first shortfall:
# an unlabelled metric writes its file at import, before pool A's multiprocess directory exists.
SHORTFALLS = Counter(
    "leadflow_admit_replica_shortfalls",
    "Admissions answered before LEADFLOW_ADMIT_WAIT_REPLICAS replicas had them (WAIT timed "
    "out): those leads were on the primary only when the client got its 202.",
    ["replicas"],
)
_LOG_EVERY_SECONDS = 10.0
_last_logged = [0.0]


def evalsha_then_wait(conn, sha: str, keys: list, args: list):
    """EVALSHA and WAIT in one round trip on `conn`; the script's reply (or its error)."""
    replicas = settings.ADMIT_WAIT_REPLICAS
    conn.send_packed_command(
        conn.pack_commands(
            [
                ("EVALSHA", sha, len(keys), *keys, *args),
                ("WAIT", replicas, settings.ADMIT_WAIT_TIMEOUT_MS),
            ]
        )
    )
    try:
        reply = conn.read_response()
    except redis.ResponseError:
        # The script failed (NoScriptError, a refused write): WAIT's reply is still on the
        # connection and must not be read as the next command's. (On a timeout or a dropped
        # connection the caller disconnects, which drops it too.)
        conn.read_response()
        raise
    acknowledged = conn.read_response()
    if acknowledged < replicas:
        SHORTFALLS.labels(str(replicas)).inc()
        now = time.monotonic()
        if now - _last_logged[0] > _LOG_EVERY_SECONDS:
            _last_logged[0] = now
            log.warning(
                "admission: %d of %d replicas acknowledged within %d ms; the 202 went out with "
                "the lead on the primary only (counted in leadflow_admit_replica_shortfalls_total)",
                acknowledged,
                replicas,
                settings.ADMIT_WAIT_TIMEOUT_MS,
            )
    return reply
