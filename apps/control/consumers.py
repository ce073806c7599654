"""LOW pause reaches the workers: their consumers of *.low are cancelled through Celery's
remote control, and added back on resume, so LOW messages already queued wait too.

Workers are named pool-<pool>…@host (Procfile), which tells the controller where a.low goes
back on resume; a cancel is broadcast (a worker not consuming the queue ignores it).

Each call opens a broker connection of its own rather than taking one from Celery's pool: a
pooled connection left from before a Redis restart fails its first read of the replies (the
publishing path retries; remote control does not), and these calls are rare (start, a pause,
a resume, every 10 s while paused).
"""

import logging

from leadflow.celery import app
from leadflow.queues import POOLS, queue_name

log = logging.getLogger(__name__)

PING_TIMEOUT_SECONDS = 1.0


def low_consumers_cancel() -> None:
    with app.connection_for_write() as connection:
        for pool in POOLS:
            app.control.cancel_consumer(queue_name(pool, "low"), reply=False, connection=connection)


def low_consumers_add() -> None:
    """Every pool's workers consume their *.low queue again."""
    with app.connection_for_write() as connection:
        replies = app.control.ping(timeout=PING_TIMEOUT_SECONDS, connection=connection)
        workers = [name for reply in replies for name in reply]
        for pool in POOLS:
            destination = [name for name in workers if name.startswith(f"pool-{pool}")]
            if destination:
                app.control.add_consumer(
                    queue_name(pool, "low"),
                    destination=destination,
                    reply=False,
                    connection=connection,
                )
            else:
                log.warning(
                    "no pool %s worker answered: its *.low consumer comes back at start", pool
                )
