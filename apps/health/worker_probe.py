"""Liveness of one pool's worker on this host, for a Kubernetes exec probe or a compose healthcheck.

    python -m apps.health.worker_probe a            # pings pool-a@<this hostname>
    python -m apps.health.worker_probe a --node pool-a@somehost --timeout 5

Exit 0 when the worker answers a Celery ping (its main loop, which consumes and acks, is
running), or when the broker itself is unreachable: restarting a worker does not bring Redis
back, and a probe that failed then would restart every worker of every pool at once.
Exit 1 when the broker answers and the worker does not.

Deliberately light: no django.setup(), only the settings module for the broker URL, since the
probe runs inside the pool's own CPU limit (0.2 vCPU for pool A).
"""

import argparse
import socket
import sys

from celery import Celery
from kombu.exceptions import OperationalError

from leadflow.queues import POOLS

EXIT_ALIVE, EXIT_DEAD = 0, 1


def node_name(pool: str, hostname: str | None = None) -> str:
    """The node name the Procfile gives the pool's worker: `-n pool-<pool>@%h`."""
    return f"pool-{pool}@{hostname or socket.gethostname()}"


def worker_ping(broker_url: str, node: str, timeout: float) -> tuple[int, str]:
    app = Celery("leadflow-probe", broker=broker_url, set_as_current=False)
    with app.connection_for_write() as connection:
        try:
            connection.ensure_connection(max_retries=1, timeout=timeout)
        except (OperationalError, OSError) as error:
            return EXIT_ALIVE, f"broker unreachable, {node} not judged: {error}"
        replies = app.control.ping(
            destination=[node], timeout=timeout, limit=1, connection=connection
        )
    if any(node in reply for reply in replies):
        return EXIT_ALIVE, f"{node} answered"
    return EXIT_DEAD, f"{node} did not answer within {timeout:g}s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pool", choices=POOLS)
    parser.add_argument("--node", help="worker node name (default: pool-<pool>@<hostname>)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    args = parser.parse_args(argv)

    from leadflow import settings  # the module only: env readers, no Django start-up

    code, message = worker_ping(
        settings.CELERY_BROKER_URL, args.node or node_name(args.pool), args.timeout
    )
    print(message, file=sys.stdout if code == EXIT_ALIVE else sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
