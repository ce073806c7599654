"""The control process: the dispatcher (inboxes → pool A, fair and tier-ordered, queues kept
shallow), the controller (lag, drain rate, the mode machine, backpressure, shedding, LOW
pause), the deferred ledger and its backfill, the stalled-lead sweeper, leadership between
replicas, the history the status page charts, and the admin of its models. What operators
read of it (the status page, the Prometheus collector) is apps/status."""
