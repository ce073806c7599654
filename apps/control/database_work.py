"""The leader's PostgreSQL work, on a thread of its own: the operators' policy (read every tick),
the audit of mode changes (queued by the controller), the reports that are due, backfill from
the deferred ledger, the sweep for stalled leads, the retention job (apps/retention), and the
hourly receipts (apps/usage).

On its own thread so that PostgreSQL down, slow or locked never holds up the dispatcher and the
controller, which need only Redis: leads keep moving from the inboxes to pool A through a
database outage, and the mode machine keeps running on the last policy read. Audit rows wait in
memory (up to AUDIT_QUEUE_MAX) and are written, with the time of their event, when PostgreSQL
answers again. Django's connections are tidied before every pass (close_old_connections, as
Django does around each request), so one broken by a database restart is replaced at the next
pass and the thread recovers by itself.
"""

import logging
import threading
import time
from collections import deque

import orjson
import redis
from django.db import close_old_connections, connections
from django.forms.models import model_to_dict

from apps.control.backfill import deferred_backfill, report_sender
from apps.control.controller import control_event_create
from apps.control.dispatcher import pools_have_room
from apps.control.models import Mode, Policy
from apps.control.modes import Shedding
from apps.control.outages import POSTGRESQL, REDIS, Step, broker_name
from apps.control.sweeper import orphaned_leads_resend, stalled_leads_resend
from apps.reports.services import reports_schedule
from apps.retention.retention import RetentionSchedule
from apps.usage.receipt import ReceiptSchedule
from leadflow.redis_conn import get_redis
from leadflow.redis_keys import CONTROL_POLICY_KEY

log = logging.getLogger(__name__)

PASS_SECONDS = 1.0  # once a tick
SWEEP_SECONDS = 10.0
AUDIT_QUEUE_MAX = 10_000  # mode changes are rare: this is hours of flapping
# The last policy read, for a control process that starts while PostgreSQL is away.
_POLICY_FIELDS = [
    field.name for field in Policy._meta.concrete_fields if field.name not in ("id", "updated_at")
]


class PolicyCache:
    """The operators' policy as last read: in memory, and a copy in Redis that a process
    started during a database outage falls back to (no copy: the defaults, no override)."""

    def __init__(self) -> None:
        self._policy: Policy | None = None
        self._copied: dict | None = None

    def update(self, policy: Policy) -> None:
        self._policy = policy
        fields = model_to_dict(policy, fields=_POLICY_FIELDS)
        if fields != self._copied:
            get_redis().set(CONTROL_POLICY_KEY, orjson.dumps(fields))
            self._copied = fields

    def current(self) -> Policy:
        if self._policy is not None:
            return self._policy
        try:
            raw = get_redis().get(CONTROL_POLICY_KEY)
        except redis.RedisError:
            raw = None
        return Policy(**orjson.loads(raw)) if raw else Policy()


class DatabaseWork(threading.Thread):
    """One term's PostgreSQL work; it stops when the lease is no longer held or on stop()."""

    STEPS = frozenset({"policy", "audit", "reports", "backfill", "sweep", "retention", "receipt"})

    def __init__(self, lease, policies: PolicyCache) -> None:
        super().__init__(name="control-database", daemon=True)
        self._lease = lease
        self._policies = policies
        self.shedding: Shedding | None = None  # the controller's, set by the loop each tick
        self.policy_read = threading.Event()  # set after the first try, read or not
        self._events: deque[dict] = deque(maxlen=AUDIT_QUEUE_MAX)
        self._stopping = threading.Event()
        self.failure: BaseException | None = None  # a bug (not an outage) that ended the thread
        self._wake = threading.Event()  # an audit row queued: written now, not at the next pass
        uses_queues = {POSTGRESQL, REDIS, broker_name()}
        self._policy = Step("policy", {POSTGRESQL, REDIS})
        self._audit = Step("audit", {POSTGRESQL})
        self._reports = Step("reports", uses_queues)
        self._backfill = Step("backfill", uses_queues)
        self._sweep = Step("sweep", uses_queues)
        self._next_sweep = 0.0
        self._retention = Step("retention", {POSTGRESQL, REDIS})  # apps/retention/retention.py
        self._retention_schedule = RetentionSchedule()
        self._receipt = Step("receipt", {POSTGRESQL, REDIS})  # apps/usage/receipt.py
        self._receipt_schedule = ReceiptSchedule()
        self._receipt_writer: threading.Thread | None = None

    def audit(self, event: dict) -> None:
        """Queue an audit row (the controller's audit sink)."""
        if len(self._events) == self._events.maxlen:
            log.error("control: audit queue full; the oldest event is dropped: %s", self._events[0])
        self._events.append(event)
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        self.join(timeout=2.0)
        if self.is_alive():
            log.warning(
                "control: the database thread is still in a PostgreSQL call; it stops after it"
            )

    def run(self) -> None:
        try:
            while self._running():
                close_old_connections()
                self._pass()
                self._wake.wait(PASS_SECONDS)
                self._wake.clear()
        except BaseException as error:
            self.failure = error  # the main loop raises it: a bug stops the process, loudly
            raise
        finally:
            connections.close_all()

    def _running(self) -> bool:
        return not self._stopping.is_set() and self._lease.held()

    def _pass(self) -> None:
        self._policy.run(self._policy_read)
        self.policy_read.set()
        if self._events and self._running():
            self._audit.run(self._audit_write)
        shedding = self.shedding
        if shedding is None:
            return  # nothing to schedule before the first tick says what runs
        if self._running():
            self._reports.run(reports_schedule, shedding, report_sender(shedding))
        if shedding.mode == Mode.NORMAL and not shedding.paused_tiers and self._running():
            self._backfill.run(self._backfill_pass)
        else:
            self._backfill.idle()
        # Every SWEEP_SECONDS; after a failure, as soon as its back-off allows.
        sweep_due = time.monotonic() >= self._next_sweep and self._running()
        if sweep_due and self._sweep.run(self._sweep_pass, shedding) is not None:
            self._next_sweep = time.monotonic() + SWEEP_SECONDS
        if self._retention_schedule.due() and self._running():
            self._retention.run(self._retention_schedule.run, shedding.mode == Mode.NORMAL)
        now = time.monotonic()
        writing = self._receipt_writer is not None and self._receipt_writer.is_alive()
        if self._receipt_schedule.due(now) and not writing and self._running():
            self._receipt_writer = threading.Thread(
                target=self._receipt_write, args=(now,), name="control-receipt", daemon=True
            )
            self._receipt_writer.start()

    def _receipt_write(self, now: float) -> None:
        """The receipts, on a thread of their own: counting an hour's CRM deliveries can take
        seconds, and this thread reads the policy every second."""
        try:
            self._receipt.run(self._receipt_schedule.run, now)
        except BaseException as error:
            self.failure = error  # a bug: the main loop raises it, as one of this thread's
            raise
        finally:
            connections.close_all()

    def _policy_read(self) -> Policy:
        policy = Policy.current()
        self._policies.update(policy)
        return policy

    def _audit_write(self) -> int:
        written = 0
        while self._events:
            control_event_create(self._events[0])
            self._events.popleft()  # only once written: an outage mid-way loses nothing
            written += 1
        return written

    @staticmethod
    def _backfill_pass() -> int:
        return deferred_backfill() if pools_have_room() else 0

    @staticmethod
    def _sweep_pass(shedding: Shedding) -> int:
        orphans = orphaned_leads_resend(shedding.paused_tiers)
        if orphans:
            log.warning(
                "control: sent %d leads on again that no message carried (e.g. %s)",
                len(orphans),
                ", ".join(orphans[:3]),
            )
        resent = stalled_leads_resend(shedding.paused_tiers, frozenset(orphans))
        if resent:
            log.warning("control: sent %d stalled leads on again", resent)
        return len(orphans) + resent
