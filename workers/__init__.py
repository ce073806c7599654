"""The worker pools: one module per pool with its Celery tasks (pool_a: qualification, pool_b:
enrichment, pool_c: CRM sync and reports), thin wrappers over the apps' services, and what a
worker process needs around them, connected to Celery's signals on import: leases on held
messages (lease), metrics and heartbeats (metrics), a thread pool's recycling (recycle), pool
A's scoring check (checks).

The outermost layer: workers import apps and leadflow, nothing imports workers (import-linter,
pyproject.toml). Celery loads the pool modules by name (leadflow/celery.py `imports`), and with
them this package, so only worker processes connect these signals.
"""

from workers import (
    checks,  # noqa: F401 - pool A checks its scoring rules when it starts
    lease,  # noqa: F401 - renews the leases of the messages a worker holds
    metrics,  # noqa: F401 - connects the pools' metrics and heartbeats
    recycle,  # noqa: F401 - restarts a thread-pool worker after N tasks or M KB
)
