"""The control process: the dispatcher (inboxes → pool A, fair and tier-ordered, queues kept
shallow), the controller (lag, drain rate, the mode machine, backpressure, shedding, LOW
pause), the deferred ledger and its backfill, the stalled-lead sweeper, leadership between
replicas; and the operator's reads of it all (status page, selectors, metrics, history,
admin)."""
